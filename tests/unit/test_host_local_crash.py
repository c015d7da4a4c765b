"""kill -9 at random instants while a process reserves and releases in a tight loop: no
reservation file is ever empty or partial, and the temporaries it leaves are cleaned up."""

from __future__ import annotations

import os
import random
import signal
import time
from ipaddress import ip_address
from pathlib import Path

from cni_bridge.ipam.host_local.config import StoreLocation
from cni_bridge.ipam.host_local.file_store import FileStore
from cni_bridge.ipam.host_local.store import TEMP_PREFIX, Owner, reservation_ip

CONTENT_ID = "c" * 64  # a realistic container ID: 64 hex characters


def churn(location: StoreLocation) -> None:
    """The child: reserve and release forever (until killed)."""
    store = FileStore.open(location, create=True)
    assert store is not None
    n = 0
    while True:
        ip = ip_address(f"10.0.{(n // 250) % 4}.{n % 250 + 2}")
        with store.locked():
            store.reserve(ip, Owner(CONTENT_ID, "eth0"), 0)
            if n % 3:
                store.release(ip)
        n += 1


def test_kill_9_never_leaves_a_partial_reservation(tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path), "n")
    rng = random.Random(42)
    expected = f"{CONTENT_ID}\r\neth0".encode()
    for _ in range(40):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                churn(location)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.002, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for entry in os.scandir(tmp_path / "n"):
            if reservation_ip(entry.name) is not None:
                assert Path(entry.path).read_bytes() == expected, entry.name
    leftovers = [n for n in os.listdir(tmp_path / "n") if n.startswith(TEMP_PREFIX)]
    store = FileStore.open(location, create=False)
    assert store is not None
    with store, store.locked():
        assert all(owner == Owner(CONTENT_ID, "eth0") for owner in store.reservations().values())
    assert not [n for n in os.listdir(tmp_path / "n") if n.startswith(TEMP_PREFIX)]
    print(f"{len(leftovers)} stale temporaries cleaned")
