"""``isolateNetworks``: containers on two isolated networks cannot reach each other, while each
still reaches its own network, the host and the outside O (USERS.md item 21).

Networks: "iso1" on br-iso1 (10.81.0.0/24, containers A and A2) and "iso2" on br-iso2
(10.82.0.0/24, container B), both gateways with masquerading; O is behind H's uplink.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.conftest import O_ETH0_V4
from tests.integration.test_bridge_common import Bench, bench, first_ip, ping
from tests.netns import Netns

__all__ = ["bench"]

GW1, GW2 = "10.81.0.1", "10.82.0.1"


def network(bench: Bench, n: int, isolate: bool, **fields: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": f"iso{n}", "type": "bridge", "bridge": f"br-iso{n}",
        "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "dataDir": str(bench.data_dir),
                 "ranges": [[{"subnet": f"10.8{n}.0.0/24"}]]},
        **fields}
    if isolate:
        cfg["isolateNetworks"] = True
    return cfg


@dataclass
class World:
    a: Netns
    a2: Netns
    b: Netns
    ra: dict[str, Any]
    rb: dict[str, Any]
    net1: dict[str, Any]
    net2: dict[str, Any]
    ip_a2: str
    ip_b: str


def world(bench: Bench, isolate: bool) -> World:
    net1, net2 = network(bench, 1, isolate), network(bench, 2, isolate)
    a, a2, b = bench.make_ns("A"), bench.make_ns("A2"), bench.make_ns("B")
    ra, ra2 = bench.add(a, net1, cid="a"), bench.add(a2, net1, cid="a2")
    rb = bench.add(b, net2, cid="b")
    return World(a, a2, b, ra, rb, net1, net2, first_ip(ra2), first_ip(rb))


def iso_sets(bench: Bench) -> dict[str, list[Any]]:
    proc = bench.host.run("nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
    if proc.returncode != 0:
        return {}
    return {i["set"]["name"]: i["set"].get("elem", [])
            for i in json.loads(proc.stdout)["nftables"] if "set" in i}


@pytest.mark.parametrize("isolate", [True, False], ids=["isolateNetworks", "off"])
def test_isolated_networks_cannot_reach_each_other(bench: Bench, outside_ns: Netns,
                                                   isolate: bool) -> None:
    w = world(bench, isolate)
    # Own network, the host (both gateways are the host's addresses) and the outside: always.
    assert ping(w.a, w.ip_a2, GW1, GW2, O_ETH0_V4) == dict.fromkeys(
        [w.ip_a2, GW1, GW2, O_ETH0_V4], True)
    assert ping(w.b, GW2, GW1, O_ETH0_V4) == dict.fromkeys([GW2, GW1, O_ETH0_V4], True)
    # Across the networks: only without the option.
    assert ping(w.a, w.ip_b, timeout=1) == {w.ip_b: not isolate}
    ip_a = first_ip(w.ra)
    assert ping(w.b, ip_a, timeout=1) == {ip_a: not isolate}
    if isolate:
        assert sorted(iso_sets(bench)["isolated_bridges"]) == ["br-iso1", "br-iso2"]
    else:
        assert "isolated_bridges" not in iso_sets(bench)


def test_only_networks_with_the_option_are_walled_off(bench: Bench) -> None:
    """The rule drops what goes between two isolated bridges; a third network without the
    option is like the reference's: reachable from both."""
    w = world(bench, True)
    net3 = network(bench, 3, False)
    c = bench.make_ns("C")
    rc = bench.add(c, net3, cid="c")
    ip_c = first_ip(rc)
    assert ping(w.a, ip_c, w.ip_b, timeout=1) == {ip_c: True, w.ip_b: False}


def test_check_del_and_idempotence(bench: Bench) -> None:
    w = world(bench, True)
    bench.ok("CHECK", w.a, w.net1, cid="a", prev=w.ra)
    # A second ADD on the same bridge adds nothing: one element per bridge.
    selves = sorted(json.dumps(e) for e in iso_sets(bench)["isolated_bridge_self"])
    assert selves == sorted(json.dumps({"concat": [b, b]}) for b in ("br-iso1", "br-iso2"))
    bench.host.run("nft", "delete", "element", "inet", "cni_bridge", "isolated_bridges",
                   '{ "br-iso1" }')
    err = bench.fails("CHECK", w.a, w.net1, cid="a", prev=w.ra)
    assert "br-iso1" in err["text"] and "isolated_bridges" in err["text"], err
    assert ping(w.a, w.ip_b, timeout=1) == {w.ip_b: True}  # the hole CHECK reported
    bench.add(w.a2, w.net1, cid="a3", ifname="eth1")  # the next ADD repairs it
    assert ping(w.a, w.ip_b, timeout=1) == {w.ip_b: False}
    bench.host.run("nft", "flush", "chain", "inet", "cni_bridge", "isolation_forward")
    err = bench.fails("CHECK", w.b, w.net2, cid="b", prev=w.rb)
    assert "isolation rule" in err["text"], err
    bench.ok("DEL", w.a2, w.net1, cid="a3", ifname="eth1")
    for ns, cfg, cid, prev in ((w.a, w.net1, "a", w.ra), (w.b, w.net2, "b", w.rb)):
        bench.ok("DEL", ns, cfg, cid=cid, prev=prev)
    # Documented: the bridges' elements stay after their last container, like the bridges.
    assert sorted(iso_sets(bench)["isolated_bridges"]) == ["br-iso1", "br-iso2"]


def test_l2_network_with_the_option_still_brings_the_link_up(bench: Bench) -> None:
    cfg = network(bench, 1, True)
    del cfg["ipam"], cfg["ipMasq"], cfg["isDefaultGateway"]
    c = bench.make_ns("C")
    bench.add(c, cfg, cid="l2")
    assert "UP" in bench.links(c)["eth0"]["flags"]
    assert iso_sets(bench)["isolated_bridges"] == ["br-iso1"]
