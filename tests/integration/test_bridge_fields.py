"""Each bridge config field, observed in the kernel (REFERENCE.md §2.1, TESTING.md §5 B)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bridge_common import (
    BRIDGE,
    GW4,
    NETWORK,
    Bench,
    bench,
    parallel,
    ping,
)
from tests.netns import Netns

__all__ = ["bench"]


def link(ns: Netns, name: str) -> dict[str, Any]:
    entries = ns.ip_json("link", "show", "dev", name)
    assert len(entries) == 1, f"{name} not found in {ns.name}"
    return dict(entries[0])


def slave_data(ns: Netns, name: str) -> dict[str, Any]:
    return dict(link(ns, name)["linkinfo"]["info_slave_data"])


def default_routes(ns: Netns, family: str = "-4") -> list[str]:
    return [r.get("gateway", "") for r in ns.ip_json(family, "route", "show", "default")]


def test_gateway_mtu_hairpin_isolation_mac_and_dns(bench: Bench, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\nsearch ipam.test\n")
    dns = {"nameservers": ["192.0.2.53"], "search": ["config.test"]}
    cfg = bench.config(isDefaultGateway=True, mtu=1400, hairpinMode=True, portIsolation=True,
                       dns=dns, capabilities={"mac": True},
                       args={"cni": {"mac": "0a:58:00:00:00:02"}},
                       runtimeConfig={"mac": "0a:58:00:00:00:03"})
    cfg["ipam"]["resolvConf"] = str(resolv)
    assert bench.host.sysctl("net.ipv4.ip_forward") == "0"
    c1, c2, c3 = bench.make_ns("C1"), bench.make_ns("C2"), bench.make_ns("C3")
    r1 = bench.add(c1, cfg, args="IgnoreUnknown=1;MAC=0a:58:00:00:00:01")

    br = link(bench.host, BRIDGE)
    assert br["linkinfo"]["info_kind"] == "bridge" and "UP" in br["flags"]
    assert br["mtu"] == 1400
    assert bench.addresses(bench.host, BRIDGE) == [f"{GW4}/24"]
    assert bench.host.sysctl("net.ipv4.ip_forward") == "1"
    host_veth = r1["interfaces"][1]["name"]
    veth = link(bench.host, host_veth)
    assert veth["mtu"] == 1400 and veth["master"] == BRIDGE
    port = slave_data(bench.host, host_veth)
    assert port["hairpin"] is True and port["isolated"] is True
    eth0 = link(c1, "eth0")
    assert eth0["mtu"] == 1400
    assert eth0["address"] == "0a:58:00:00:00:03"  # runtimeConfig.mac wins
    assert r1["interfaces"][2]["mac"] == "0a:58:00:00:00:03"
    assert default_routes(c1) == [GW4]
    assert r1["dns"] == dns  # replaces what IPAM returned from resolvConf

    # Without runtimeConfig, args.cni.mac beats CNI_ARGS; a later, smaller MTU does not
    # change the existing bridge.
    cfg2 = {**cfg, "mtu": 1300, "hairpinMode": False, "portIsolation": False}
    del cfg2["runtimeConfig"], cfg2["dns"]
    run = bench.call("ADD", c2, cfg2, cid="c2", args="IgnoreUnknown=1;MAC=0a:58:00:00:00:01")
    assert run.rc == 0, run.stdout
    r2 = run.json
    assert link(c2, "eth0")["address"] == "0a:58:00:00:00:02"
    assert link(c2, "eth0")["mtu"] == 1300
    assert link(bench.host, r2["interfaces"][1]["name"])["mtu"] == 1300
    port2 = slave_data(bench.host, r2["interfaces"][1]["name"])
    assert port2["hairpin"] is False and port2["isolated"] is False
    # The kernel lowers a bridge to its smallest port (the reference's behaviour too); we say so.
    assert link(bench.host, BRIDGE)["mtu"] == 1300
    assert f'bridge "{BRIDGE}" MTU lowered from 1400 to 1300' in run.stderr
    assert r2["dns"] == {"nameservers": ["192.0.2.1"], "search": ["ipam.test"]}

    cfg3 = {k: v for k, v in cfg2.items() if k not in ("args", "mtu")}
    cfg3["portIsolation"] = True
    bench.add(c3, cfg3, cid="c3", args="MAC=0a:58:00:00:00:01")
    assert link(c3, "eth0")["address"] == "0a:58:00:00:00:01"
    # Isolated ports cannot talk to each other; a non-isolated one can talk to both.
    ip1, ip3 = (bench.addresses(c, "eth0")[0].split("/")[0] for c in (c1, c3))
    assert ping(c2, ip1, ip3) == {ip1: True, ip3: True}
    assert ping(c1, ip3, timeout=1) == {ip3: False}


def test_bridge_mac_is_pinned(bench: Bench) -> None:
    """The bridge MAC is none of its ports' and survives ports coming and going (USERS.md 13)."""
    cfg = bench.config()
    c1, c2 = bench.make_ns("C1"), bench.make_ns("C2")
    r1 = bench.add(c1, cfg, cid="c1")
    mac = link(bench.host, BRIDGE)["address"]
    assert r1["interfaces"][0]["mac"] == mac
    r2 = bench.add(c2, cfg, cid="c2")
    veth_macs = {link(bench.host, r["interfaces"][1]["name"])["address"] for r in (r1, r2)}
    assert mac not in veth_macs
    bench.ok("DEL", c1, cfg, cid="c1", prev=r1)
    assert link(bench.host, BRIDGE)["address"] == mac == r2["interfaces"][0]["mac"]
    # A portless bridge someone else left unpinned reads as 00:00:..: it gets a real MAC.
    bench.host.run("ip", "link", "add", "br-old", "type", "bridge")
    bench.host.run("ip", "link", "add", "tmp0", "master", "br-old", "type", "veth")
    bench.host.run("ip", "link", "del", "tmp0")
    assert link(bench.host, "br-old")["address"] == "00:00:00:00:00:00"
    r3 = bench.add(bench.make_ns("C3"), {**cfg, "bridge": "br-old", "isGateway": False},
                   cid="c3")
    assert r3["interfaces"][0]["mac"] == link(bench.host, "br-old")["address"]
    assert r3["interfaces"][0]["mac"] not in ("00:00:00:00:00:00", r3["interfaces"][1]["mac"])


def test_promisc_without_gateway(bench: Bench) -> None:
    cfg = bench.config(bridge="br-promisc", isGateway=False, promiscMode=True)
    c = bench.make_ns("C")
    result = bench.add(c, cfg)
    br = link(bench.host, "br-promisc")
    assert br["promiscuity"] >= 1
    assert "PROMISC" in br["flags"]
    assert bench.addresses(bench.host, "br-promisc") == []
    assert bench.host.sysctl("net.ipv4.ip_forward") == "0"
    assert default_routes(c) == []
    assert bench.addresses(c, "eth0") == [result["ips"][0]["address"]]


def test_invalid_combinations_change_nothing(bench: Bench) -> None:
    c = bench.make_ns("C")
    cases = [
        (bench.config(hairpinMode=True, promiscMode=True), "hairpin"),
        (bench.config(disableContainerInterface=True),
         "cannot use IPAM when DisableContainerInterface flag is set"),
        (bench.config(vlan=4095), "vlan"),
        (bench.config(ipMasq=True, ipMasqBackend="ipchains"), "ipMasqBackend"),
        (bench.config(vlanTrunk=[{"minID": 10}]), "minID and maxID"),
    ]
    errors = parallel(lambda case: bench.fails("ADD", c, case[0]), cases)
    for (_, expected), err in zip(cases, errors, strict=True):
        assert err["code"] == 7, err
        assert expected in err["text"], err
    assert list(bench.links()) == ["lo"]
    assert list(bench.links(c)) == ["lo"]
    assert bench.reservations() == {}


def test_force_address(bench: Bench) -> None:
    bench.host.run("ip", "link", "add", BRIDGE, "type", "bridge")
    bench.host.run("ip", "addr", "add", "10.77.0.99/24", "dev", BRIDGE)
    c = bench.make_ns("C")
    err = bench.fails("ADD", c, bench.config())
    assert "10.77.0.99/24" in err["text"] and f"{GW4}/24" in err["text"], err
    assert "forceAddress" in err["text"]
    # Rolled back after the IPAM allocation: no reservation, no veth, nothing in C.
    assert bench.reservations() == {}
    assert bench.host_veths() == []
    assert list(bench.links(c)) == ["lo"]
    assert bench.addresses(bench.host, BRIDGE) == ["10.77.0.99/24"]

    bench.add(c, bench.config(forceAddress=True))
    assert bench.addresses(bench.host, BRIDGE) == [f"{GW4}/24"]
    assert ping(c, GW4) == {GW4: True}


def bridge_vlans(ns: Netns, dev: str) -> dict[int, set[str]]:
    """{vid: flags} of a bridge port (`bridge -j vlan show`)."""
    doc = json.loads(ns.run("bridge", "-j", "vlan", "show", "dev", dev).stdout or "[]")
    out: dict[int, set[str]] = {}
    for entry in doc:
        for v in entry.get("vlans", []):
            for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1):
                out[vid] = set(v.get("flags", []))
    return out


@pytest.fixture
def vlan_filtering(bench: Bench) -> bool:
    probe = bench.host.run("ip", "link", "add", "vlprobe", "type", "bridge", "vlan_filtering",
                           "1", check=False)
    bench.host.run("ip", "link", "del", "vlprobe", check=False)
    return probe.returncode == 0


def test_vlan_without_kernel_support_is_a_clear_error(bench: Bench, vlan_filtering: bool) -> None:
    if vlan_filtering:
        pytest.skip("this kernel has bridge VLAN filtering")
    c = bench.make_ns("C")
    err = bench.fails("ADD", c, bench.config(vlan=100))
    assert "vlan_filtering" in err["text"] and "CONFIG_BRIDGE_VLAN_FILTERING" in err["text"]
    assert list(bench.links()) == ["lo"] and list(bench.links(c)) == ["lo"]
    assert bench.reservations() == {}


def test_vlans_in_l2_mode(bench: Bench, vlan_filtering: bool) -> None:
    if not vlan_filtering:
        pytest.skip("this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
    access = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "bridge": "br-v1",
              "vlan": 100}
    trunk = {**access, "bridge": "br-v2", "vlan": 0,
             "vlanTrunk": [{"id": 200}, {"minID": 300, "maxID": 302}]}
    keep = {**access, "bridge": "br-v3", "preserveDefaultVlan": True}
    c1, c2, c3, c4, c5 = (bench.make_ns(f"C{i}") for i in range(1, 6))
    r1 = bench.add(c1, access, cid="c1")
    r2 = bench.add(c2, access, cid="c2")
    r3 = bench.add(c3, {**access, "vlan": 200}, cid="c3")
    r4 = bench.add(c4, trunk, cid="c4")
    r5 = bench.add(c5, keep, cid="c5")

    for br in ("br-v1", "br-v2", "br-v3"):
        assert link(bench.host, br)["linkinfo"]["info_data"]["vlan_filtering"] == 1
    pvid = {"PVID", "Egress Untagged"}
    assert bridge_vlans(bench.host, r1["interfaces"][1]["name"]) == {100: pvid}
    assert bridge_vlans(bench.host, r3["interfaces"][1]["name"]) == {200: pvid}
    assert bridge_vlans(bench.host, r4["interfaces"][1]["name"]) == {
        1: pvid, 200: set(), 300: set(), 301: set(), 302: set()}
    assert bridge_vlans(bench.host, r5["interfaces"][1]["name"]) == {
        1: {"Egress Untagged"}, 100: pvid}

    bench.ok("CHECK", c1, access, cid="c1", prev=r1)
    # The VLANs separate: same VLAN talks, another VLAN does not (addresses added by hand).
    for c, last in ((c1, 1), (c2, 2), (c3, 3)):
        c.run("ip", "addr", "add", f"10.66.0.{last}/24", "dev", "eth0", "nodad")
    assert ping(c1, "10.66.0.2", "10.66.0.3", timeout=1) == {"10.66.0.2": True,
                                                              "10.66.0.3": False}
    assert r2["interfaces"][0]["name"] == "br-v1"


def test_vlan_gateway(bench: Bench, vlan_filtering: bool) -> None:
    """With a VLAN the gateway goes on `<bridge>.<vlan>`, whose peer is an access port."""
    if not vlan_filtering:
        pytest.skip("this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
    cfg = bench.config(bridge="br-v4", vlan=100, isDefaultGateway=True)
    c1, c2 = bench.make_ns("C1"), bench.make_ns("C2")
    r1 = bench.add(c1, cfg, cid="c1")
    bench.add(c2, cfg, cid="c2")
    assert [i["name"] for i in r1["interfaces"]][::2] == ["br-v4", "eth0"]
    assert r1["interfaces"][3]["name"] == "br-v4.100"
    assert bench.addresses(bench.host, "br-v4.100") == [f"{GW4}/24"]
    assert bench.addresses(bench.host, "br-v4") == []
    peers = [n for n, li in bench.links(kind="veth").items()
             if li.get("master") == "br-v4" and n != r1["interfaces"][1]["name"]]
    assert {100: {"PVID", "Egress Untagged"}} in [bridge_vlans(bench.host, p) for p in peers]
    assert ping(c1, GW4) == {GW4: True}
    assert ping(bench.host, "10.77.0.3") == {"10.77.0.3": True}
    bench.ok("CHECK", c1, cfg, cid="c1", prev=r1)


def test_l2_mode(bench: Bench) -> None:
    """No IPAM: no addresses, no routes, the link is up, and CHECK works (the reference's fails
    with "no plugin name provided"). With disableContainerInterface the link stays down."""
    cfg = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "bridge": BRIDGE}
    down = {**cfg, "disableContainerInterface": True}
    c1, c2 = bench.make_ns("C1"), bench.make_ns("C2")
    r1, r2 = parallel(lambda a: bench.add(a[0], a[1], cid=a[2]),
                      [(c1, cfg, "c1"), (c2, down, "c2")])
    assert r1.get("ips", []) == [] and bench.addresses(c1, "eth0") == []
    assert "UP" in link(c1, "eth0")["flags"]
    assert c1.ip_json("route", "show") == []
    assert [r["dst"] for r in c1.ip_json("-6", "route", "show")] in ([], ["fe80::/64"])
    eth0 = link(c2, "eth0")
    assert "UP" not in eth0["flags"] and eth0["operstate"] == "DOWN"
    assert link(bench.host, r2["interfaces"][1]["name"])["master"] == BRIDGE
    assert r2.get("ips", []) == []
    assert bench.addresses(bench.host, BRIDGE) == []
    parallel(lambda a: bench.ok("CHECK", a[0], a[1], cid=a[2], prev=a[3]),
             [(c1, cfg, "c1", r1), (c2, down, "c2", r2)])
    # Two L2 containers talk once the workload has addressed them itself.
    c1.run("ip", "addr", "add", "10.66.0.1/24", "dev", "eth0", "nodad")
    c2.run("ip", "link", "set", "eth0", "up")
    c2.run("ip", "addr", "add", "10.66.0.2/24", "dev", "eth0", "nodad")
    assert ping(c1, "10.66.0.2") == {"10.66.0.2": True}


def test_macspoofchk(bench: Bench) -> None:
    c = bench.make_ns("C")
    cid = "spoofy"
    cfg = bench.config(macspoofchk=True)
    result = bench.add(c, cfg, cid=cid)
    mac, host_veth = result["interfaces"][2]["mac"], result["interfaces"][1]["name"]
    chain, comment = f"cni-br-iface-{cid}-eth0", f"macspoofchk-{cid}-eth0"
    listing = bench.host.run("nft", "list", "table", "bridge", "nat").stdout
    assert f'iifname "{host_veth}" jump {chain} comment "{comment}"' in listing
    assert f'jump {chain}-mac comment "{comment}"' in listing
    assert f'ether saddr {mac} return comment "{comment}"' in listing
    assert f'drop comment "{comment}"' in listing
    assert re.search(r"type filter hook prerouting priority (-300|dstnat); policy accept;",
                     listing)

    assert ping(c, GW4) == {GW4: True}
    c.run("ip", "link", "set", "eth0", "address", "0a:58:de:ad:be:ef")
    c.run("ip", "neigh", "flush", "dev", "eth0")
    assert ping(c, GW4, timeout=1) == {GW4: False}  # frames with another MAC are dropped
    c.run("ip", "link", "set", "eth0", "address", mac)
    c.run("ip", "neigh", "flush", "dev", "eth0")
    assert ping(c, GW4) == {GW4: True}

    bench.ok("DEL", c, cfg, cid=cid, prev=result)
    listing = bench.host.run("nft", "list", "table", "bridge", "nat").stdout
    assert chain not in listing and comment not in listing
