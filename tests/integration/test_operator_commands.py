"""The operator commands for real (root): ``cni-bridge add|check|del|status|gc|reconcile`` run
inside the throwaway "node" H, with temp conf, cache, IPAM and record directories."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.node import records
from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4
from tests.netns import Netns, echo_server, probe


@dataclass
class Node:
    host: Netns
    outside: Netns
    exe: Path
    plugin_dir: Path
    tmp: Path

    @property
    def dirs(self) -> list[str]:
        return ["--conf-dir", str(self.tmp / "conf"), "--cache-dir", str(self.tmp / "cache"),
                "--plugin-dir", str(self.plugin_dir)]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CNI_BRIDGE_STATE_DIR": str(self.tmp / "state")}
        proc = self.host.run(str(self.exe), *args, env=env, check=False, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"cni-bridge {' '.join(args)}: rc={proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def add(self, ns: Netns, cid: str, *extra: str) -> str:
        return self.cli("add", "cni-bridge", ns.name, "--id", cid, *extra, *self.dirs).stdout

    def status(self) -> dict[str, Any]:
        doc = json.loads(self.cli("status", "cni-bridge", "--json", *self.dirs).stdout)
        network: dict[str, Any] = doc["networks"][0]
        return network

    def snapshot(self) -> dict[str, Any]:
        """Everything gc could change: files with contents, H's links and firewall."""
        files = {str(p.relative_to(self.tmp)): p.read_bytes()
                 for p in sorted(self.tmp.rglob("*")) if p.is_file()}
        return {"files": files,
                "links": self.host.run("ip", "-br", "link").stdout,
                "nft": self.host.run("nft", "list", "ruleset").stdout}


@pytest.fixture
def node(host_ns: Netns, outside_ns: Netns, plugin_dir: Path, tmp_path: Path) -> Node:
    conf = copy.deepcopy(DEFAULT_CONFLIST)
    conf["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "10-cni-bridge.conflist").write_text(json.dumps(conf, indent=2))
    return Node(host_ns, outside_ns, plugin_dir / "cni-bridge", plugin_dir, tmp_path)


def test_add_status_check_del(node: Node, netns: Callable[[str], Netns]) -> None:
    c1, c2 = netns("C1"), netns("C2")
    out = node.add(c1, "ctr1", "--port", "8080:80/tcp")
    assert "added ctr1/eth0 to network cni-bridge" in out
    assert "address   172.18.0.2/16 gateway 172.18.0.1" in out
    assert "port      8080->80/tcp" in out
    node.add(c2, "ctr2")

    st = node.status()
    assert st["ready"] == "yes"
    assert st["bridge"] == "br0" and st["bridge_state"] == "up"
    assert st["bridge_addresses"] == ["172.18.0.1/16"]
    assert st["forwarding"]["net.ipv4.ip_forward"] == "on"
    atts = {a["container_id"]: a for a in st["attachments"]}
    assert sorted(atts) == ["ctr1", "ctr2"]
    assert atts["ctr1"]["addresses"] == ["172.18.0.2"]
    assert atts["ctr1"]["netns"] == c1.path
    veths = {link["ifname"] for link in node.host.ip_json("link", "show", "type", "veth")}
    assert atts["ctr1"]["host_veth"] in veths and atts["ctr2"]["host_veth"] in veths
    assert {"store", "cache"} <= set(atts["ctr1"]["sources"])

    text = node.cli("status", *node.dirs).stdout
    assert "network cni-bridge" in text and "bridge       br0: up, 172.18.0.1/16" in text
    assert "attachments  2" in text

    for ns, cid in ((c1, "ctr1"), (c2, "ctr2")):
        check = node.cli("check", "cni-bridge", ns.name, "--id", cid, *node.dirs).stdout
        assert f"ok: {cid}/eth0" in check
    for ns, cid in ((c1, "ctr1"), (c2, "ctr2")):
        node.cli("del", "cni-bridge", ns.name, "--id", cid, *node.dirs)
    assert node.status()["attachments"] == []
    assert [link["ifname"] for link in node.host.ip_json("link", "show", "type", "veth")] == [
        "uplink"]


def test_check_reports_a_broken_attachment(node: Node, netns: Callable[[str], Netns]) -> None:
    c1 = netns("C1")
    node.add(c1, "ctr1")
    c1.run("ip", "link", "del", "eth0")
    proc = node.cli("check", "cni-bridge", c1.name, "--id", "ctr1", *node.dirs, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("cni-bridge check: plugin bridge failed:")


def test_gc_dry_run_changes_nothing_and_gc_removes_the_stale(
        node: Node, netns: Callable[[str], Netns]) -> None:
    c1, c2 = netns("C1"), netns("C2")
    node.add(c1, "ctr1", "--port", "8080:80")
    node.add(c2, "ctr2")
    before = node.snapshot()
    out = node.cli("gc", "cni-bridge", "--valid", "ctr1/eth0", "--dry-run", *node.dirs).stdout
    assert "(dry run: nothing is changed)" in out
    assert "would remove ctr2/eth0: release 172.18.0.3; DEL through the plugins" in out
    assert "ctr1/eth0:" not in out
    assert node.snapshot() == before

    out = node.cli("gc", "cni-bridge", "--valid", "ctr1/eth0", *node.dirs).stdout
    assert "removing ctr2/eth0" in out and out.rstrip().endswith("done")
    atts = node.status()["attachments"]
    assert [(a["container_id"], a["addresses"]) for a in atts] == [("ctr1", ["172.18.0.2"])]
    assert c2.ip_json("link", "show", "type", "veth") == []
    with echo_server(c1, "tcp", 80) as server:
        assert probe(node.outside, "tcp", H_UPLINK_V4, 8080).ok
    assert server.peer == O_ETH0_V4


def test_gc_without_valid_list_refuses(node: Node) -> None:
    proc = node.cli("gc", "cni-bridge", *node.dirs, check=False)
    assert proc.returncode == 1 and "--valid ID/IFNAME" in proc.stderr


def test_add_with_a_missing_plugin_says_what_to_do(node: Node,
                                                   netns: Callable[[str], Netns]) -> None:
    c1 = netns("C1")
    proc = node.cli("add", "cni-bridge", c1.name, "--conf-dir", str(node.tmp / "conf"),
                    "--cache-dir", str(node.tmp / "cache"), "--plugin-dir",
                    str(node.tmp / "nowhere"), check=False)
    assert proc.returncode == 1
    assert "plugin 'bridge' not found" in proc.stderr and "--plugin-dir" in proc.stderr


def test_reconcile_restores_connectivity_after_a_firewall_flush(
        node: Node, netns: Callable[[str], Netns]) -> None:
    c1 = netns("C1")
    node.add(c1, "ctr1", "--port", "8080:80")
    with echo_server(c1, "tcp", 80) as server:
        assert probe(node.outside, "tcp", H_UPLINK_V4, 8080).ok
    assert server.peer == O_ETH0_V4

    node.host.run("nft", "flush", "ruleset")
    (att,) = node.status()["attachments"]
    assert att["rules"].startswith("missing"), att
    assert att["ports"] == ["8080->80/tcp"]
    assert not probe(node.outside, "tcp", H_UPLINK_V4, 8080, timeout=1.0).ok

    out = node.cli("reconcile").stdout
    assert "restored" in out
    (att,) = node.status()["attachments"]
    assert att["rules"] == "present"
    with echo_server(c1, "tcp", 80) as server:
        assert probe(node.outside, "tcp", H_UPLINK_V4, 8080).ok
    assert server.peer == O_ETH0_V4
    with echo_server(node.outside, "tcp", 9000) as server:
        assert probe(c1, "tcp", O_ETH0_V4, 9000).ok
    assert server.peer == H_UPLINK_V4  # masqueraded again
    again = node.cli("reconcile").stdout
    assert "0 restored" in again


def write_records_as_the_plugins_do(node: Node, cid: str, address: str) -> None:
    """The records an ADD with --port 8080:80 leaves (written here, in the documented shape)."""
    root = node.tmp / "state" / f"netns-{os.stat(node.host.path).st_ino}"
    records.save_record(root, records.Record("cni-bridge", cid, "eth0", "bridge", {
        "masq": [{"address": address, "subnet": "172.18.0.0/16"}], "backend": "nftables"}))
    records.save_record(root, records.Record("cni-bridge", cid, "eth0", "portmap", {
        "mappings": [{"protocol": "tcp", "hostPort": 8080, "containerIP": address,
                      "containerPort": 80, "hostIP": ""}],
        "options": {"snat": True, "masqAll": False}, "backend": "nftables"}))


def test_reconcile_restores_recorded_rules_after_a_firewall_flush(
        node: Node, netns: Callable[[str], Netns]) -> None:
    c1 = netns("C1")
    node.add(c1, "ctr1", "--port", "8080:80")
    write_records_as_the_plugins_do(node, "ctr1", "172.18.0.2/16")
    (att,) = node.status()["attachments"]
    assert att["rules"] == "present" and att["ports"] == ["8080->80/tcp"]

    node.host.run("nft", "flush", "ruleset")
    (att,) = node.status()["attachments"]
    assert att["rules"].startswith("missing: "), att
    assert not probe(node.outside, "tcp", H_UPLINK_V4, 8080, timeout=1.0).ok

    out = node.cli("reconcile", "cni-bridge").stdout
    assert "2 record(s), 2 restored" in out
    with echo_server(c1, "tcp", 80) as server:
        assert probe(node.outside, "tcp", H_UPLINK_V4, 8080).ok
    assert server.peer == O_ETH0_V4
    with echo_server(node.outside, "tcp", 9000) as server:
        assert probe(c1, "tcp", O_ETH0_V4, 9000).ok
    assert server.peer == H_UPLINK_V4
    assert "2 record(s), 0 restored" in node.cli("reconcile").stdout
    node.cli("del", "cni-bridge", c1.name, "--id", "ctr1", *node.dirs)
