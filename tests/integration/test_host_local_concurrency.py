"""Many concurrent calls, and kill -9 at random moments during ADD."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tests.integration.test_host_local_helpers import (
    HostLocal,
    addresses,
    finish,
    netconf,
    ours,
    reservation_files,
    spawn,
    store_files,
)

__all__ = ["ours"]  # fixture

TEMP_PREFIX = ".cni-bridge-tmp-"


def conf(d: Path) -> dict[str, object]:
    return netconf(d, ranges=[[{"subnet": "10.61.0.0/25"}], [{"subnet": "fd00:61::/64"}]])


def test_64_concurrent_adds_then_64_concurrent_dels(
    ours: HostLocal, plugin_dir: Path, tmp_path: Path
) -> None:
    config = conf(tmp_path)
    started = time.monotonic()
    procs = [spawn(ours.argv(plugin_dir, "ADD", f"k{n}"), config) for n in range(64)]
    results = [finish(p) for p in procs]
    add_seconds = time.monotonic() - started
    assert all(rc == 0 for rc, _ in results), [r for r in results if r[0]]
    v4 = {doc["ips"][0]["address"] for _, doc in results}
    v6 = {doc["ips"][1]["address"] for _, doc in results}
    assert len(v4) == len(v6) == 64
    assert len(reservation_files(tmp_path)) == 128
    procs = [spawn(ours.argv(plugin_dir, "DEL", f"k{n}"), config) for n in range(64)]
    assert all(finish(p)[0] == 0 for p in procs)
    assert sorted(store_files(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    print(f"64 concurrent ADDs took {add_seconds:.2f}s")


def test_kill_9_during_add_leaves_no_partial_reservation(
    ours: HostLocal, plugin_dir: Path, tmp_path: Path
) -> None:
    """Kill ADDs at random moments (mostly inside the store phase, by timing from a measured run).

    Afterwards every reservation file is complete, DEL of the killed container cleans up, and
    the next ADD works.
    """
    config = conf(tmp_path)
    t0 = time.monotonic()
    assert finish(spawn(ours.argv(plugin_dir, "ADD", "warm"), config))[0] == 0
    duration = time.monotonic() - t0
    rng = random.Random(1234)
    killed_mid_way = 0
    for trial in range(16):
        cid = f"kill{trial}"
        proc = spawn(ours.argv(plugin_dir, "ADD", cid), config)
        # Most kills land in the last 40% of the run, where the store is written.
        time.sleep(duration * rng.choice([rng.uniform(0.0, 1.1), rng.uniform(0.6, 1.05)]))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_mid_way += 1
        finish(proc)
        for name, data in reservation_files(tmp_path).items():
            assert data.split(b"\r\n")[1:] == [b"eth0"] and data.split(b"\r\n")[0], (name, data)
        assert ours("DEL", config, cid=cid).rc == 0
        held = [n for n, d in reservation_files(tmp_path).items() if d.startswith(cid.encode())]
        assert held == []
    assert killed_mid_way >= 4
    assert addresses(ours("ADD", config, cid="after")) != []
    assert not [n for n in store_files(tmp_path) if n.startswith(TEMP_PREFIX)]
