"""Every example in conf/ works as shipped (root): ADD, CHECK and DEL through the product's
runtime in throwaway namespaces, with the example's own bridge and subnets; only the IPAM
dataDir is moved to a temp dir."""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.admin.runtime import Attachment, Runtime
from cni_bridge.deploy.confdir import parse_network_list
from tests.netns import Netns, echo_server, probe

CONF = Path(__file__).resolve().parents[2] / "conf"
EXAMPLES = sorted(CONF.glob("*.conflist"))
ECHO_PORT = 7070
MAPPING = {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}


def with_temp_data_dir(doc: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for plugin in doc["plugins"]:
        ipam = plugin.get("ipam")
        if ipam and ipam.get("type") == "host-local":
            ipam["dataDir"] = str(data_dir)
    return doc


def subnets(doc: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(r["subnet"]) for p in doc["plugins"]
            for rs in (p.get("ipam") or {}).get("ranges", []) for r in rs]


def needs(doc: dict[str, Any], host: Netns) -> str | None:
    """Why this machine cannot run the example, if it cannot."""
    if any(p.get("vlan") for p in doc["plugins"]):
        made = host.run("ip", "link", "add", "vlanprobe", "type", "bridge", "vlan_filtering",
                        "1", check=False)
        host.run("ip", "link", "del", "vlanprobe", check=False)
        if made.returncode != 0:
            return f"the kernel has no bridge VLAN filtering: {made.stderr.strip()}"
    backends = {p.get("ipMasqBackend") or p.get("backend") for p in doc["plugins"]}
    if "iptables" in backends and shutil.which("iptables-save") is None:
        return "iptables is not installed"
    if "nftables" in backends and shutil.which("nft") is None:
        return "nft is not installed"
    return None


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_add_check_del(example: Path, host_ns: Netns, netns: Callable[[str], Netns],
                               plugin_dir: Path, tmp_path: Path) -> None:
    doc = with_temp_data_dir(json.loads(example.read_text()), tmp_path / "ipam")
    if reason := needs(doc, host_ns):
        pytest.skip(reason)
    net = parse_network_list(doc)
    bridge = next(p for p in doc["plugins"] if p["type"] == "bridge")
    container = netns("C")
    caps = {"portMappings": [MAPPING]} if any(
        (p.get("capabilities") or {}).get("portMappings") for p in doc["plugins"]) else {}
    att = Attachment("example-1", "eth0", container.path, capability_args=caps)
    runtime = Runtime([plugin_dir], tmp_path / "cache", netns=host_ns.name,
                      env={"CNI_BRIDGE_STATE_DIR": str(tmp_path / "state")})

    result = runtime.add(net, att)

    (br,) = host_ns.ip_json("link", "show", bridge["bridge"])
    assert br["linkinfo"]["info_kind"] == "bridge"
    (eth0,) = container.ip_json("addr", "show", "eth0")
    have = {ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}") for a in eth0["addr_info"]
            if a.get("scope") == "global"}
    want = {ipaddress.ip_interface(ip["address"]) for ip in result.get("ips", [])}
    assert have == want
    assert [n.version for n in subnets(doc)] == [ip.version for ip in sorted(
        want, key=lambda i: i.version)]
    for ip in want:
        assert any(ip.ip in n for n in subnets(doc)), f"{ip} is not in the example's subnets"
    if bridge.get("vlan"):
        ports = host_ns.ip_json("link", "show", "master", bridge["bridge"])
        assert len(ports) == 1
    if bridge.get("isGateway"):
        v4 = next(str(i.ip) for i in want if i.version == 4)
        with echo_server(container, "tcp", ECHO_PORT) as server:
            assert probe(host_ns, "tcp", v4, ECHO_PORT).ok
        assert server.peer is not None

    runtime.check(net, att)
    runtime.delete(net, att)

    veths = [link["ifname"] for link in host_ns.ip_json("link", "show", "type", "veth")]
    assert veths == []
    store = tmp_path / "ipam" / net.name
    left = sorted(p.name for p in store.iterdir()) if store.is_dir() else []
    assert [n for n in left if n != "lock" and not n.startswith("last_reserved_ip")] == []
    assert not list((tmp_path / "cache").rglob("*-example-1-eth0"))
    runtime.delete(net, att)  # a second DEL succeeds too
