"""What the server keeps in memory for ``status``, and how ``status`` shows it."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from cni_bridge.admin import examine as inspect
from cni_bridge.node import records
from cni_bridge.serve.client import query
from cni_bridge.serve.server.view import EXIT_SERVED, RACY_NS, InFlight, RecordsView, ServerView


def save(root: Path, network: str, cid: str, plugin: str = "bridge",
         backend: str = "nftables") -> None:
    records.save_record(root, records.Record(network, cid, "eth0", plugin,
                                             {"backend": backend, "masq": []}))


def test_records_are_read_again_only_when_a_network_directory_changes(tmp_path: Path) -> None:
    view = RecordsView(tmp_path)
    save(tmp_path, "net1", "c1")
    view.refresh()
    time.sleep(RACY_NS / 1e9 + 0.01)  # read right after the change: racy, so read once more
    view.refresh()
    reads = view.reads
    view.refresh()
    view.refresh()
    assert view.reads == reads  # nothing changed: nothing read
    assert [a.container for a in view.networks()["net1"]] == ["c1"]

    save(tmp_path, "net1", "c2", backend="iptables")  # written by any call, served or not
    save(tmp_path, "net2", "c3", plugin="portmap")
    view.refresh()
    assert sorted(a.container for a in view.networks()["net1"]) == ["c1", "c2"]
    assert [a.plugin for a in view.networks()["net2"]] == ["portmap"]
    assert view.backends() == {"nftables", "iptables"}

    records.remove_record(tmp_path, "net1", "c1", "eth0", "bridge")
    shutil.rmtree(tmp_path / "net2")
    view.refresh()
    assert [a.container for a in view.networks()["net1"]] == ["c2"]
    assert "net2" not in view.networks()


def test_counters_and_snapshot(tmp_path: Path) -> None:
    save(tmp_path, "net1", "c1")
    view = ServerView("/run/cni-bridge/serve.sock", "0e068f26f270", 4026531840,
                      RecordsView(tmp_path), pid=77, started=1000.0)
    for pid, verb in ((10, "ADD"), (11, "ADD"), (12, "DEL"), (13, "CHECK")):
        view.in_flight[pid] = InFlight(500 + pid, "bridge", verb, 1001.0)
    view.finished(10, EXIT_SERVED)
    view.finished(11, EXIT_SERVED)
    view.finished(12, -signal.SIGKILL)  # the worker died
    view.in_flight[14] = InFlight(514, "portmap", "ADD", 1001.0)
    view.finished(14, -signal.SIGIO)  # its caller went away
    view.finished(99, EXIT_SERVED)  # not a worker of ours: ignored
    view.refused["caller runs in another PID namespace"] += 1
    view.checked({"time": 1002.0, "trigger": "start", "missing": [], "restored": 0})
    view.checked({"time": 1003.0, "trigger": "change: nftables", "restored": 1,
                  "missing": ["nft table inet cni_bridge is missing"], "remaining": []})
    snap = view.snapshot(now=1010.0)
    json.dumps(snap)  # JSON-able as a whole
    assert snap["served"] == {"ADD": 2} and snap["served_total"] == 2
    assert (snap["lost"], snap["abandoned"]) == (1, 1)
    assert snap["in_flight"] == [{"worker": 13, "caller": 513, "role": "bridge",
                                  "verb": "CHECK", "seconds": 9.0}]
    assert snap["uptime_s"] == 10.0 and snap["checks"] == 2
    assert snap["last_restore"]["trigger"] == "change: nftables"
    assert snap["networks"] == {"net1": [{"container": "c1", "ifname": "eth0",
                                          "plugin": "bridge", "backend": "nftables"}]}
    assert snap["state_root"] == str(tmp_path)


def test_rules_from_the_servers_last_check() -> None:
    assert query.rules_from_health({}).startswith("unknown: the server has not checked")
    assert query.rules_from_health({"health": {"remaining": []}}) == "present"
    assert query.rules_from_health({"health": {"remaining": ["nft chain x is missing"]}}) \
        == "missing: nft chain x is missing"
    assert query.rules_from_health({"health": {"errors": ["nft: not found"]}}) \
        == "unknown: nft: not found"


def test_apply_sets_rules_of_recorded_attachments_only() -> None:
    recorded = inspect.AttachmentState("c1", "eth0", sources=["store", "record"])
    unrecorded = inspect.AttachmentState("c2", "eth0", sources=["store"])
    st = inspect.NetworkStatus("n", "", "1.0.0", "br0", "up", [], [], "nftables", {}, "yes",
                               [recorded, unrecorded])
    query.apply([st], {"health": {"remaining": []}})
    assert (recorded.rules, unrecorded.rules) == ("present", "no record")


def test_format_server() -> None:
    answer: dict[str, Any] = {
        "pid": 77, "socket": "/run/cni-bridge/serve.sock", "digest": "0e068f26f270",
        "uptime_s": 12.0, "served": {"ADD": 2, "DEL": 1}, "served_total": 3,
        "refused": {"x": 1}, "lost": 0, "in_flight": [],
        "health": {"time": 1000.0, "trigger": "periodic", "remaining": []},
        "last_restore": {"time": 990.0, "trigger": "change: nftables", "restored": 6, "ms": 9.5},
    }
    text = "\n".join(query.format_server(answer, now=1005.0))
    assert "pid 77 on /run/cni-bridge/serve.sock" in text
    assert "3 served (ADD 2, DEL 1), 1 refused, 0 lost, 0 abandoned, 0 running" in text
    assert "skeleton whole, checked 5 s ago (periodic)" in text
    assert "6 record(s) after change: nftables, 9.5 ms" in text


def test_a_spoof_check_or_isolation_makes_nftables_changes_matter(tmp_path: Path) -> None:
    """Both are nftables rules: a node whose masquerade is iptables still watches nftables."""
    records.save_record(tmp_path, records.Record("n", "c1", "eth0", "bridge",
                                                 {"backend": "iptables", "masq": []}))
    view = RecordsView(tmp_path)
    view.refresh()
    assert view.backends() == {"iptables"}
    records.save_record(tmp_path, records.Record("n", "c2", "eth0", "bridge", {
        "backend": "iptables", "masq": [], "isolate": ["br0"]}))
    view = RecordsView(tmp_path)
    view.refresh()
    assert view.backends() == {"iptables", "nftables"}
