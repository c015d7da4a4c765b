"""Spare workers for real: ``cni-bridge serve`` (frozen build, in H) keeps workers forked
before their calls, a served call runs in one of them, and none outlives the server.

The calls here are host-local's (no firewall change, so no health check forks a child of the
server meanwhile: every child of the server seen here is a spare or a call's worker).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import RunPlugin
from tests.integration.test_serve_common import Resident, call_log, resident
from tests.netns import Netns, wait_until

__all__ = ["resident"]

STEPS = ("accept", "hello", "worker", "entered", "request", "call", "logged")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def ipam_conf(data_dir: Path) -> dict[str, object]:
    return {"cniVersion": "1.1.0", "name": "sparenet", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.63.0.0/24"}]]}}


def test_a_served_call_runs_in_a_worker_forked_before_it(
        host_ns: Netns, resident: Callable[..., Resident], run_plugin: RunPlugin,
        tmp_path: Path) -> None:
    server = resident(args=["--check-interval", "3600"])
    wait_until(lambda: len(children(server.pid)) == 2, "two spare workers", 10)
    spares = children(server.pid)
    log = tmp_path / "calls.jsonl"
    added = run_plugin(host_ns, "host-local", "ADD", ipam_conf(tmp_path / "ipam"),
                       netns=host_ns, env={"CNI_BRIDGE_LOG": str(log)})
    assert added.rc == 0, added.stdout
    (record,) = call_log(log)
    assert record["served"]
    times = [record["timeline"][step] for step in STEPS]
    assert times == sorted(times), record["timeline"]  # each step after the one before
    wait_until(lambda: len(children(server.pid)) == 2, "the spare used replaced", 10)
    after = children(server.pid)
    assert len(spares - after) == 1  # one spare ran the call and exited; a new one waits
    assert server.served() == {"ADD": 1}

    server.stop()
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in after),
               "the spares to exit with the server", 5)


def test_without_spares_the_server_forks_at_each_call(
        host_ns: Netns, resident: Callable[..., Resident], run_plugin: RunPlugin,
        tmp_path: Path) -> None:
    server = resident(args=["--check-interval", "3600", "--spare-workers", "0"])
    added = run_plugin(host_ns, "host-local", "ADD", ipam_conf(tmp_path / "ipam"),
                       netns=host_ns)
    assert added.rc == 0, added.stdout
    assert server.served() == {"ADD": 1}
    assert children(server.pid) == set()
