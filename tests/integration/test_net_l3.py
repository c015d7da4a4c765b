"""The net layer against a real kernel: addresses, IPv6 DAD waits, routes, neighbour entries.

As in test_net_links: all netlink work goes through sockets bound to throwaway namespaces, and
the kernel's view is read back with ``ip -j -d`` inside them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.net.addresses import (
    ensure_address,
    ensure_address_replacing,
    list_addresses,
    remove_address,
    wait_addresses_settled,
)
from cni_bridge.net.bridge import ensure_bridge
from cni_bridge.net.errors import LinkNotFound, NetlinkOpError, WaitTimeout
from cni_bridge.net.links import get_link, set_link_up
from cni_bridge.net.model import BridgeSpec, RouteSpec, VethPair, VethSpec
from cni_bridge.net.neighbours import remove_neighbour
from cni_bridge.net.routes import (
    add_route,
    ensure_route,
    list_routes,
    remove_route,
)
from cni_bridge.net.sysctl import ensure_sysctl
from cni_bridge.net.veth import create_veth_pair
from tests.integration.test_net_links import Side, open_side
from tests.netns import Netns

ip = ipaddress.ip_address
iface = ipaddress.ip_interface
network = ipaddress.ip_network


@pytest.fixture
def side(netns: Callable[[str], Netns]) -> Iterator[Callable[[str], Side]]:
    made: list[Side] = []

    def make(role: str) -> Side:
        made.append(open_side(netns(role)))
        return made[-1]

    yield make
    for s in reversed(made):
        s.close()


def addrs_json(s: Side, dev: str) -> list[dict[str, Any]]:
    return list(s.ns.ip_json("addr", "show", "dev", dev)[0]["addr_info"])


def linked_pair(h: Side, c: Side) -> VethPair:
    """H's veth end and C's eth0, both up."""
    pair = create_veth_pair(h.nl, c.nl, VethSpec("eth0"))
    set_link_up(h.nl, pair.host)
    set_link_up(c.nl, "eth0")
    return pair


# --- addresses --------------------------------------------------------------------------------


def test_ensure_and_remove_addresses(side: Callable[[str], Side]) -> None:
    h = side("H")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    assert ensure_address(h.nl, br, iface("10.88.0.1/16")) is True
    assert ensure_address(h.nl, "cni0", iface("10.88.0.1/16")) is False
    assert ensure_address(h.nl, br, iface("fd00:88::1/64"), nodad=True) is True
    seen = {(a["local"], a["prefixlen"]): a for a in addrs_json(h, "cni0")}
    assert seen[("10.88.0.1", 16)]["broadcast"] == "10.88.255.255"
    v6 = seen[("fd00:88::1", 64)]
    assert v6.get("nodad") is True and not v6.get("tentative")
    listed = list_addresses(h.nl, br, version=4)
    assert [a.interface for a in listed] == [iface("10.88.0.1/16")]
    assert listed[0].index == br.index and listed[0].label == "cni0"
    assert iface("fd00:88::1/64") in {a.interface for a in list_addresses(h.nl, version=6)}
    assert remove_address(h.nl, br, iface("10.88.0.1/16")) is True
    assert remove_address(h.nl, br, iface("10.88.0.1/16")) is False
    assert remove_address(h.nl, "gone0", iface("10.88.0.1/16")) is False
    assert all(a["family"] != "inet" for a in addrs_json(h, "cni0"))


def test_ensure_address_replacing_stale_ones(side: Callable[[str], Side]) -> None:
    h = side("H")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    ensure_address(h.nl, br, iface("10.99.0.1/16"))
    ensure_address(h.nl, br, iface("10.88.0.1/16"))
    stale = list_addresses(h.nl, br, version=4)  # the caller's forceAddress decision
    assert ensure_address_replacing(h.nl, br, iface("10.88.0.1/16"), stale) is False
    assert [a.interface for a in list_addresses(h.nl, br, version=4)] == [iface("10.88.0.1/16")]


def test_address_on_missing_link_names_it(side: Callable[[str], Side]) -> None:
    h = side("H")
    with pytest.raises(LinkNotFound, match='interface "nope0" not found'):
        ensure_address(h.nl, "nope0", iface("10.1.0.1/24"))
    with pytest.raises(NetlinkOpError, match=r"cannot add address 10.1.0.1/24 to interface index"):
        ensure_address(h.nl, 999, iface("10.1.0.1/24"))


def test_wait_addresses_settled_after_dad(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    linked_pair(h, c)
    ensure_address(c.nl, "eth0", iface("fd00:1::2/64"))  # with DAD
    assert any(a.tentative for a in list_addresses(c.nl, "eth0", version=6))
    started = time.monotonic()
    settled = wait_addresses_settled(c.nl, "eth0", timeout=5)
    elapsed = time.monotonic() - started
    assert iface("fd00:1::2/64") in {a.interface for a in settled}
    assert not any(a.tentative for a in settled) and elapsed < 5
    assert not any(a.get("tentative") for a in addrs_json(c, "eth0"))


def test_wait_addresses_settled_is_immediate_with_nodad(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    linked_pair(h, c)
    ensure_sysctl("net/ipv6/conf/eth0/accept_dad", 0, netns=c.handle)  # link-local too
    ensure_address(c.nl, "eth0", iface("fd00:1::2/64"), nodad=True)
    started = time.monotonic()
    settled = wait_addresses_settled(c.nl, "eth0", timeout=2)
    assert time.monotonic() - started < 0.5
    assert iface("fd00:1::2/64") in {a.interface for a in settled}


def test_dad_failure_is_reported_with_the_address(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    pair = linked_pair(h, c)
    ensure_address(h.nl, pair.host, iface("fd00:1::7/64"), nodad=True)
    ensure_address(c.nl, "eth0", iface("fd00:1::7/64"))  # a duplicate, with DAD
    with pytest.raises(CniError, match=r"fd00:1::7/64 on interface \"eth0\" failed duplicate"):
        wait_addresses_settled(c.nl, "eth0", timeout=5)


def test_wait_addresses_timeout(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    create_veth_pair(h.nl, c.nl, VethSpec("eth0"))
    set_link_up(c.nl, "eth0")  # no carrier: DAD cannot even start
    ensure_address(c.nl, "eth0", iface("fd00:1::2/64"))
    with pytest.raises(WaitTimeout, match=r"fd00:1::2/64 .* still tentative after 0.2 s"):
        wait_addresses_settled(c.nl, "eth0", timeout=0.2)


# --- routes -----------------------------------------------------------------------------------


def routed_container(h: Side, c: Side) -> int:
    linked_pair(h, c)
    ensure_address(c.nl, "eth0", iface("10.88.0.2/16"))
    ensure_address(c.nl, "eth0", iface("fd00:88::2/64"), nodad=True)
    return get_link(c.nl, "eth0").index


def test_default_routes_and_listing(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    index = routed_container(h, c)
    add_route(c.nl, RouteSpec(network("0.0.0.0/0"), gateway=ip("10.88.0.1")))
    add_route(c.nl, RouteSpec(network("::/0"), gateway=ip("fd00:88::1"), index=index))
    default_v4 = c.ns.ip_json("route", "show", "default")
    assert default_v4[0]["gateway"] == "10.88.0.1" and default_v4[0]["dev"] == "eth0"
    defaults = [r for r in list_routes(c.nl) if r.dst.prefixlen == 0]
    assert {(r.dst.version, r.gateway, r.index) for r in defaults} == {
        (4, ip("10.88.0.1"), index),
        (6, ip("fd00:88::1"), index),
    }
    v4 = list_routes(c.nl, 4, link="eth0")
    assert {r.dst for r in v4} == {network("0.0.0.0/0"), network("10.88.0.0/16")}
    with pytest.raises(NetlinkOpError, match=r"cannot add route 0.0.0.0/0 via 10.88.0.1: File"):
        add_route(c.nl, RouteSpec(network("0.0.0.0/0"), gateway=ip("10.88.0.1")))


def test_route_attributes_table_and_removal(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    index = routed_container(h, c)
    spec = RouteSpec(
        network("192.0.2.0/24"), gateway=ip("10.88.0.1"), priority=100, mtu=1300, advmss=1200
    )
    assert ensure_route(c.nl, spec) is True
    assert ensure_route(c.nl, spec) is False
    seen = c.ns.ip_json("route", "show", "192.0.2.0/24")[0]
    assert seen["metric"] == 100 and seen["gateway"] == "10.88.0.1"
    assert seen["metrics"] == [{"mtu": 1300, "advmss": 1200}]
    listed = [r for r in list_routes(c.nl, 4) if r.dst == network("192.0.2.0/24")]
    assert [(r.priority, r.mtu, r.advmss) for r in listed] == [(100, 1300, 1200)]
    in_table = RouteSpec(network("198.51.100.0/24"), index=index, table=100)
    add_route(c.nl, in_table)
    assert c.ns.ip_json("route", "show", "table", "100")[0]["dst"] == "198.51.100.0/24"
    assert [r.dst for r in list_routes(c.nl, table=100)] == [network("198.51.100.0/24")]
    assert all(r.table == 254 for r in list_routes(c.nl, 4))
    assert remove_route(c.nl, spec) is True
    assert remove_route(c.nl, spec) is False
    assert remove_route(c.nl, in_table) is True
    assert c.ns.ip_json("route", "show", "192.0.2.0/24") == []


def test_append_adds_a_second_path(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    routed_container(h, c)
    dst = network("203.0.113.0/24")
    add_route(c.nl, RouteSpec(dst, gateway=ip("10.88.0.1")), append=True)
    add_route(c.nl, RouteSpec(dst, gateway=ip("10.88.0.3")), append=True)
    routes = [r for r in list_routes(c.nl, 4) if r.dst == dst]
    gateways = {r.gateway for r in routes} | {h.gateway for r in routes for h in r.nexthops}
    assert {ip("10.88.0.1"), ip("10.88.0.3")} <= gateways


# --- neighbours -------------------------------------------------------------------------------


def test_remove_stale_neighbour_entry(side: Callable[[str], Side]) -> None:
    h = side("H")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    ensure_address(h.nl, br, iface("10.88.0.1/16"))
    for addr in ("10.88.0.5", "fd00:88::5"):
        h.ns.run("ip", "neigh", "add", addr, "lladdr", "02:00:00:00:00:05", "dev", "cni0")
    assert len(h.ns.ip_json("neigh", "show", "dev", "cni0")) == 2
    assert remove_neighbour(h.nl, br, ip("10.88.0.5")) is True
    assert remove_neighbour(h.nl, "cni0", ip("fd00:88::5")) is True
    assert h.ns.ip_json("neigh", "show", "dev", "cni0") == []
    assert remove_neighbour(h.nl, br, ip("10.88.0.5")) is False
    assert remove_neighbour(h.nl, "gone0", ip("10.88.0.5")) is False
