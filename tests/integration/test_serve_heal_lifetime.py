"""The health check's child never outlives the server, and a restore of thousands of records
goes in a few transactions.

Thousands of records are written straight into the test host namespace H's record directory
(as thousands of ADDs would have left them; that would take minutes), so the server's start
check finds our table missing and restores them all in a forked child. The server is stopped
(SIGTERM) or killed (SIGKILL) in the middle of it: one second later no process of the server
is left, the child included (the server ends it when stopping; the kernel kills it when the
server dies: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import STATE_ENV
from tests.integration.test_serve_common import Resident, resident, wait_for
from tests.netns import Netns, wait_until

__all__ = ["resident"]

MANY = 20_000  # records: a restore of several seconds on any machine


def write_records(host: Netns, count: int, backend: str = "nftables") -> Path:
    """`count` records (half bridge, half portmap) of `count // 2` attachments in H."""
    root = Path(os.environ[STATE_ENV]) / f"netns-{os.stat(host.path).st_ino}" / "bulk"
    root.mkdir(parents=True)
    for i in range(count // 2):
        address = f"10.47.{i // 250}.{i % 250 + 2}/16"
        data = {"bridge": {"backend": backend, "masq": [{"address": address,
                                                         "subnet": "10.47.0.0/16"}]},
                "portmap": {"backend": backend, "options": {"snat": True}, "mappings": [
                    {"protocol": "tcp", "hostPort": 20000 + i, "containerIP": address,
                     "containerPort": 80}]}}
        for plugin, payload in data.items():
            doc = {"network": "bulk", "containerID": f"bulk{i}", "ifname": "eth0",
                   "plugin": plugin, "data": payload}
            (root / f"bulk{i}.eth0.{plugin}.json").write_text(json.dumps(doc))
    return root


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (stat_fields(int(p.name)) or ["", ""])[1] == str(pid)]


def in_group(pgrp: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and alive(int(p.name)) and (stat_fields(int(p.name)) or ["", "", ""])[2] == str(pgrp)]


def health_child(server: Resident) -> int:
    """The running health check (the server runs no call and keeps no spare worker here: its
    only child)."""
    found: list[int] = []

    def started() -> bool:
        found[:] = [c for c in children(server.pid) if alive(c)]
        return bool(found)

    wait_until(started, "the start check's child", 20)
    (child,) = found
    return child


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
def test_no_process_of_the_server_is_left_a_second_after_it_ends_mid_restore(
        how: signal.Signals, host_ns: Netns, resident: Callable[..., Resident]) -> None:
    write_records(host_ns, MANY)
    server = resident(use=False, args=("--spare-workers", "0"))  # spares: test_serve_spare
    child = health_child(server)
    assert (server.status() or {}).get("checks") == 0, "the restore ended before the test " \
        "could stop it: raise MANY"
    assert in_group(child) == [child]  # its own process group, which the server's stop ends
    # Its children, taken now: once the server is gone, what outlives it has a new parent.
    before = children(server.pid)
    assert child in before

    os.kill(server.pid, how)
    assert server.proc is not None
    server.proc.wait(timeout=10)
    time.sleep(1)
    assert not alive(child), f"health check {child} outlived the server ({how.name})"
    assert in_group(child) == []
    assert [pid for pid in before if alive(pid)] == []
    if how == signal.SIGTERM:
        assert "stopped" in server.output()


def start_restore(server: Resident, timeout: float) -> tuple[dict[str, Any], float]:
    """The report of the server's first restore (at start), and how long until it showed."""
    report: dict[str, Any] = {}

    def restored() -> bool:
        nonlocal report
        report = (server.status() or {}).get("last_restore") or {}
        return bool(report)

    took = wait_for(restored, "the start check's restore", timeout)
    return report, took


def test_thousands_of_records_are_restored_in_a_few_transactions(
        host_ns: Netns, resident: Callable[..., Resident]) -> None:
    write_records(host_ns, 4000)
    server = resident(use=False)
    report, took = start_restore(server, 120)
    print(f"4,000 records restored at start: {report.get('ms')} ms by the server's report, "
          f"{report.get('transactions')} transactions ({took:.1f} s until status showed it)")
    assert report["restored"] == 4000 and report["errors"] == [] and not report["failed"]
    assert report["transactions"] == 8  # 2,000 masquerade, 2,000 port entries, 500 a chunk
    listing = json.loads(host_ns.run("nft", "-j", "list", "map", "inet", "cni_bridge",
                                     "hostport_any4").stdout)
    (ports,) = [item["map"] for item in listing["nftables"] if "map" in item]
    assert len(ports["elem"]) == 2000


def test_two_records_claiming_one_address_restore_without_file_exists(
        host_ns: Netns, resident: Callable[..., Resident]) -> None:
    """Two values under one map key in one transaction is what the kernel refuses with "File
    exists": a stale record (a lost DEL) and the newer owner of its address must not both go
    into the restore. The newer record wins; the other is named."""
    root = write_records(host_ns, 200)
    for cid, mtime in (("stale", 1_000_000), ("fresh", 2_000_000)):
        doc = {"network": "bulk", "containerID": cid, "ifname": "eth0", "plugin": "bridge",
               "data": {"backend": "nftables", "masq": [{"address": "10.47.9.9/16",
                                                         "subnet": "10.47.0.0/16"}]}}
        path = root / f"{cid}.eth0.bridge.json"
        path.write_text(json.dumps(doc))
        os.utime(path, (mtime, mtime))
    server = resident(use=False)
    report, _ = start_restore(server, 60)
    assert not report["failed"] and report["transactions"] == 2, report
    (conflict,) = report["errors"]  # type: ignore[misc]
    assert "masquerade of 10.47.9.9 of container stale" in conflict
    assert "the newer record bulk/fresh.eth0.bridge" in conflict
    listing = json.loads(host_ns.run("nft", "-j", "list", "map", "inet", "cni_bridge",
                                     "masq_owner4").stdout)
    (owners,) = [item["map"]["elem"] for item in listing["nftables"] if "map" in item]
    (comment,) = [key["elem"]["comment"] for key, _ in owners
                  if key["elem"]["val"] == "10.47.9.9"]
    assert "id: fresh" in comment, comment
