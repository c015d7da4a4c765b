"""Parsing of decoded rtnetlink messages into the net layer's dataclasses.

The inputs are pyroute2 ``dump()`` outputs recorded on Linux 6.18 (trimmed to the attributes
the parsers read, plus a few they must ignore), so no kernel and no pyroute2 are needed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni_bridge.net._parse import attr, parse_address, parse_bridge_vlans, parse_link, parse_route
from cni_bridge.net.model import (
    BridgePortInfo,
    BridgeVlan,
    NextHop,
    OperState,
)

BRIDGE: dict[str, Any] = {
    "attrs": [
        ["IFLA_IFNAME", "cni0"],
        ["IFLA_TXQLEN", 1000],
        ["IFLA_OPERSTATE", "UP"],
        ["IFLA_MTU", 1400],
        ["IFLA_ADDRESS", "A2:A5:D3:CA:0E:E9"],
        ["UNKNOWN", {"header": {"length": 8, "type": 63}}],
        [
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ["IFLA_INFO_KIND", "bridge"],
                    [
                        "IFLA_INFO_DATA",
                        {"attrs": [["IFLA_BR_STP_STATE", 0], ["IFLA_BR_VLAN_FILTERING", 0]]},
                    ],
                ]
            },
        ],
    ],
    "change": 0,
    "family": 0,
    "flags": 69699,
    "ifi_type": 1,
    "index": 2,
    "state": "up",
}

HOST_VETH: dict[str, Any] = {
    "attrs": [
        ["IFLA_IFNAME", "veth1234abcd"],
        ["IFLA_OPERSTATE", "UP"],
        ["IFLA_MTU", 1400],
        ["IFLA_MASTER", 2],
        ["IFLA_ADDRESS", "a2:a5:d3:ca:0e:e9"],
        [
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ["IFLA_INFO_KIND", "veth"],
                    ["IFLA_INFO_SLAVE_KIND", "bridge"],
                    [
                        "IFLA_INFO_SLAVE_DATA",
                        {
                            "attrs": [
                                ["IFLA_BRPORT_STATE", 3],
                                ["IFLA_BRPORT_MODE", 1],
                                ["IFLA_BRPORT_LEARNING", 1],
                                ["IFLA_BRPORT_ISOLATED", 0],
                            ]
                        },
                    ],
                ]
            },
        ],
        ["IFLA_LINK_NETNSID", 0],
        ["IFLA_LINK", 2],
    ],
    "change": 0,
    "family": 0,
    "flags": 69699,
    "ifi_type": 1,
    "index": 3,
    "state": "up",
}

LOOPBACK: dict[str, Any] = {
    "attrs": [
        ["IFLA_IFNAME", "lo"],
        ["IFLA_OPERSTATE", "UNKNOWN"],
        ["IFLA_MTU", 65536],
        ["IFLA_ADDRESS", "00:00:00:00:00:00"],
    ],
    "flags": 8,
    "index": 1,
}

ADDR_V4: dict[str, Any] = {
    "attrs": [
        ["IFA_ADDRESS", "10.88.0.2"],
        ["IFA_LOCAL", "10.88.0.2"],
        ["IFA_BROADCAST", "10.88.255.255"],
        ["IFA_LABEL", "eth0"],
        ["IFA_FLAGS", 128],
        [
            "IFA_CACHEINFO",
            {"cstamp": 139451, "ifa_preferred": 4294967295, "ifa_valid": 4294967295},
        ],
    ],
    "family": 2,
    "flags": 128,
    "index": 2,
    "prefixlen": 16,
    "scope": 0,
}

ADDR_V6_TENTATIVE: dict[str, Any] = {
    "attrs": [
        ["IFA_ADDRESS", "fd00:88::2"],
        ["IFA_CACHEINFO", {"cstamp": 139452, "ifa_valid": 4294967295}],
        ["IFA_FLAGS", 192],
    ],
    "family": 10,
    "flags": 192,
    "index": 2,
    "prefixlen": 64,
    "scope": 0,
}

ROUTE_DEFAULT: dict[str, Any] = {
    "attrs": [
        ["RTA_TABLE", 254],
        ["RTA_PRIORITY", 100],
        ["RTA_GATEWAY", "10.88.0.1"],
        ["RTA_OIF", 2],
    ],
    "dst_len": 0,
    "family": 2,
    "flags": 0,
    "proto": 3,
    "scope": 0,
    "table": 254,
    "type": 1,
}

ROUTE_CONNECTED: dict[str, Any] = {
    "attrs": [
        ["RTA_TABLE", 254],
        ["RTA_DST", "10.88.0.0"],
        ["RTA_PREFSRC", "10.88.0.2"],
        ["RTA_OIF", 2],
    ],
    "dst_len": 16,
    "family": 2,
    "proto": 2,
    "scope": 253,
    "table": 254,
    "type": 1,
}

ROUTE_MULTIPATH: dict[str, Any] = {
    "attrs": [
        ["RTA_TABLE", 254],
        ["RTA_DST", "192.0.2.0"],
        [
            "RTA_MULTIPATH",
            [
                {"attrs": [["RTA_GATEWAY", "10.88.0.1"]], "flags": 0, "hops": 0, "oif": 2},
                {"attrs": [["RTA_GATEWAY", "10.88.0.3"]], "flags": 0, "hops": 0, "oif": 2},
            ],
        ],
    ],
    "dst_len": 24,
    "family": 2,
    "proto": 3,
    "scope": 0,
    "table": 254,
    "type": 1,
}

ROUTE_V6_METRICS: dict[str, Any] = {
    "attrs": [
        ["RTA_TABLE", 254],
        ["RTA_DST", "2001:db8::"],
        ["RTA_METRICS", {"attrs": [["RTAX_MTU", 1300], ["RTAX_ADVMSS", 1200]]}],
        ["RTA_PRIORITY", 1024],
        ["RTA_GATEWAY", "fd00:88::1"],
        ["RTA_OIF", 2],
        ["RTA_CACHEINFO", {"rta_clntref": 0, "rta_error": 0}],
        ["RTA_PREF", 0],
    ],
    "dst_len": 64,
    "family": 10,
    "proto": 3,
    "scope": 0,
    "table": 254,
    "type": 1,
}


def test_parse_bridge() -> None:
    link = parse_link(BRIDGE)
    assert (link.index, link.name, link.kind, link.mtu) == (2, "cni0", "bridge", 1400)
    assert link.mac == "a2:a5:d3:ca:0e:e9"  # normalised to lowercase
    assert link.oper_state is OperState.UP
    assert link.is_up and not link.promisc
    assert link.vlan_filtering is False
    assert link.master_index is None and link.peer_index is None and link.port is None


def test_parse_bridge_port_veth() -> None:
    link = parse_link(HOST_VETH)
    assert (link.kind, link.master_index, link.peer_index, link.link_netnsid) == ("veth", 2, 2, 0)
    assert link.port == BridgePortInfo(hairpin=True, isolated=False, state=3)
    assert link.vlan_filtering is None


def test_parse_plain_device_has_no_kind_or_peer() -> None:
    link = parse_link(LOOPBACK)
    assert (link.kind, link.peer_index, link.master_index) == (None, None, None)
    assert link.oper_state is OperState.UNKNOWN
    assert not link.is_up


def test_unknown_oper_state_maps_to_unknown() -> None:
    msg = {**LOOPBACK, "attrs": [["IFLA_IFNAME", "x"], ["IFLA_OPERSTATE", "WEIRD"]]}
    assert parse_link(msg).oper_state is OperState.UNKNOWN


def test_parse_ipv4_address_prefers_ifa_local() -> None:
    peer = {**ADDR_V4, "attrs": [["IFA_ADDRESS", "10.0.0.9"], *ADDR_V4["attrs"][1:]]}
    for msg in (ADDR_V4, peer):
        addr = parse_address(msg)
        assert addr.interface == ipaddress.ip_interface("10.88.0.2/16")
        assert addr.label == "eth0"
        assert not addr.tentative and not addr.dad_failed


def test_parse_ipv6_tentative_address() -> None:
    addr = parse_address(ADDR_V6_TENTATIVE)
    assert addr.interface == ipaddress.ip_interface("fd00:88::2/64")
    assert addr.tentative and not addr.dad_failed
    assert addr.address == ipaddress.ip_address("fd00:88::2")


def test_ifa_flags_attribute_overrides_the_8bit_field() -> None:
    msg = {
        **ADDR_V6_TENTATIVE,
        "flags": 0,
        "attrs": [["IFA_ADDRESS", "fd00::1"], ["IFA_FLAGS", 0x48]],
    }
    addr = parse_address(msg)
    assert addr.tentative and addr.dad_failed


def test_parse_default_route() -> None:
    route = parse_route(ROUTE_DEFAULT)
    assert route.dst.prefixlen == 0
    assert route.dst == ipaddress.ip_network("0.0.0.0/0")
    assert route.gateway == ipaddress.ip_address("10.88.0.1")
    assert (route.index, route.priority, route.table, route.protocol) == (2, 100, 254, 3)


def test_parse_connected_route() -> None:
    route = parse_route(ROUTE_CONNECTED)
    assert route.dst == ipaddress.ip_network("10.88.0.0/16")
    assert route.gateway is None and route.scope == 253
    assert route.prefsrc == ipaddress.ip_address("10.88.0.2")
    assert route.dst.prefixlen != 0


def test_parse_multipath_route() -> None:
    route = parse_route(ROUTE_MULTIPATH)
    assert route.gateway is None and route.index is None
    assert route.nexthops == (
        NextHop(ipaddress.ip_address("10.88.0.1"), 2),
        NextHop(ipaddress.ip_address("10.88.0.3"), 2),
    )


def test_parse_ipv6_route_metrics() -> None:
    route = parse_route(ROUTE_V6_METRICS)
    assert route.dst == ipaddress.ip_network("2001:db8::/64")
    assert (route.mtu, route.advmss, route.priority) == (1300, 1200, 1024)


def test_ipv6_default_route_without_rta_dst() -> None:
    msg = {"attrs": [["RTA_GATEWAY", "fe80::1"], ["RTA_OIF", 3]], "family": 10, "dst_len": 0}
    route = parse_route(msg)
    assert route.dst == ipaddress.ip_network("::/0") and route.dst.prefixlen == 0


def _vlan_msg(*infos: tuple[int, int]) -> dict[str, Any]:
    entries = [["IFLA_BRIDGE_VLAN_INFO", {"flags": f, "vid": v}] for f, v in infos]
    return {"index": 5, "family": 7, "attrs": [["IFLA_AF_SPEC", {"attrs": entries}]]}


@pytest.mark.parametrize(
    ("infos", "expected"),
    [
        ([(0x6, 1)], [BridgeVlan(1, pvid=True, untagged=True)]),
        ([(0x0, 10), (0x4, 20)], [BridgeVlan(10), BridgeVlan(20, untagged=True)]),
        ([(0x8, 100), (0x10, 200)], [BridgeVlan(100, 200)]),
        (
            [(0x6, 1), (0x8, 5), (0x10, 9), (0, 42)],
            [BridgeVlan(1, pvid=True, untagged=True), BridgeVlan(5, 9), BridgeVlan(42)],
        ),
        ([], []),
    ],
)
def test_parse_bridge_vlans(infos: list[tuple[int, int]], expected: list[BridgeVlan]) -> None:
    assert parse_bridge_vlans(_vlan_msg(*infos)) == expected


def test_attr_helper_tolerates_missing_and_none() -> None:
    assert attr(None, "X", 5) == 5
    assert attr({}, "X") is None
    assert attr({"attrs": None}, "X", 1) == 1
    assert attr({"attrs": [("X", 0), ("X", 1)]}, "X") == 0
