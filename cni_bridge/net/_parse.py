"""Pure parsers: decoded rtnetlink messages -> the dataclasses of ``model``.

A message is anything shaped like pyroute2's decoded messages or their ``dump()``: a mapping of
header fields plus ``"attrs"``, a sequence of ``(name, value)`` pairs whose nested values are
again such mappings. So recorded plain dicts work as test input and no pyroute2 import is needed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from cni_bridge.net.model import (
    AddressInfo,
    BridgePortInfo,
    BridgeVlan,
    IPAddress,
    LinkInfo,
    NextHop,
    OperState,
    RouteInfo,
)

Msg = Mapping[str, Any]

BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
BRIDGE_VLAN_INFO_RANGE_BEGIN = 0x8
BRIDGE_VLAN_INFO_RANGE_END = 0x10


def field(msg: Msg, name: str, default: Any = None) -> Any:
    """A header field of ``msg``. (Plain indexing: pyroute2's ``get`` searches attributes first.)"""
    return msg[name] if name in msg else default  # noqa: SIM401


def _pairs(msg: Msg | None) -> Sequence[Any]:
    if msg is None or "attrs" not in msg:
        return ()
    return msg["attrs"] or ()


def attr(msg: Msg | None, name: str, default: Any = None) -> Any:
    """The value of the first attribute ``name`` of ``msg`` (``default`` when absent)."""
    for pair in _pairs(msg):
        if pair[0] == name:
            return pair[1]
    return default


def attrs(msg: Msg | None, name: str) -> list[Any]:
    """The values of every attribute ``name`` of ``msg``, in order."""
    return [pair[1] for pair in _pairs(msg) if pair[0] == name]


def _ip(value: str | None) -> IPAddress | None:
    return ipaddress.ip_address(value) if value else None


def _oper_state(value: Any) -> OperState:
    try:
        return OperState(str(value).upper())
    except ValueError:
        return OperState.UNKNOWN


def parse_link(msg: Msg) -> LinkInfo:
    info = attr(msg, "IFLA_LINKINFO")
    kind = attr(info, "IFLA_INFO_KIND")
    mac = attr(msg, "IFLA_ADDRESS")
    master = attr(msg, "IFLA_MASTER")
    vlan_filtering = None
    if kind == "bridge":
        value = attr(attr(info, "IFLA_INFO_DATA"), "IFLA_BR_VLAN_FILTERING")
        vlan_filtering = None if value is None else bool(value)
    return LinkInfo(
        index=int(msg["index"]),
        name=str(attr(msg, "IFLA_IFNAME", "")),
        kind=kind,
        mac=str(mac).lower() if mac else None,
        mtu=int(attr(msg, "IFLA_MTU", 0)),
        flags=int(field(msg, "flags", 0)),
        oper_state=_oper_state(attr(msg, "IFLA_OPERSTATE", "UNKNOWN")),
        master_index=int(master) if master else None,
        peer_index=_peer_index(msg, kind),
        link_netnsid=attr(msg, "IFLA_LINK_NETNSID"),
        vlan_filtering=vlan_filtering,
        port=_bridge_port(info),
    )


def _peer_index(msg: Msg, kind: str | None) -> int | None:
    link = attr(msg, "IFLA_LINK")
    if kind != "veth" or not link:
        return None
    return int(link)


def _bridge_port(info: Msg | None) -> BridgePortInfo | None:
    if attr(info, "IFLA_INFO_SLAVE_KIND") != "bridge":
        return None
    data = attr(info, "IFLA_INFO_SLAVE_DATA")
    return BridgePortInfo(
        hairpin=bool(attr(data, "IFLA_BRPORT_MODE", 0)),
        isolated=bool(attr(data, "IFLA_BRPORT_ISOLATED", 0)),
        state=int(attr(data, "IFLA_BRPORT_STATE", 0)),
    )


def parse_address(msg: Msg) -> AddressInfo:
    # IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links);
    # IPv6 sends only IFA_ADDRESS.
    address = attr(msg, "IFA_LOCAL") or attr(msg, "IFA_ADDRESS")
    flags = attr(msg, "IFA_FLAGS")
    return AddressInfo(
        index=int(msg["index"]),
        interface=ipaddress.ip_interface(f"{address}/{msg['prefixlen']}"),
        scope=int(field(msg, "scope", 0)),
        flags=int(field(msg, "flags", 0) if flags is None else flags),
        label=attr(msg, "IFA_LABEL"),
    )


def parse_route(msg: Msg) -> RouteInfo:
    family = int(field(msg, "family", socket.AF_INET))
    dst = attr(msg, "RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    dst_len = int(field(msg, "dst_len", 0))
    metrics = attr(msg, "RTA_METRICS")
    oif = attr(msg, "RTA_OIF")
    return RouteInfo(
        dst=ipaddress.ip_network(f"{dst}/{dst_len}", strict=False),
        gateway=_ip(attr(msg, "RTA_GATEWAY")),
        index=int(oif) if oif else None,
        priority=attr(msg, "RTA_PRIORITY"),
        table=int(attr(msg, "RTA_TABLE", field(msg, "table", 0))),
        scope=int(field(msg, "scope", 0)),
        protocol=int(field(msg, "proto", 0)),
        type=int(field(msg, "type", 0)),
        prefsrc=_ip(attr(msg, "RTA_PREFSRC")),
        mtu=attr(metrics, "RTAX_MTU"),
        advmss=attr(metrics, "RTAX_ADVMSS"),
        nexthops=_nexthops(attr(msg, "RTA_MULTIPATH")),
    )


def _nexthops(multipath: Sequence[Msg] | None) -> tuple[NextHop, ...]:
    hops = []
    for hop in multipath or ():
        oif = field(hop, "oif")
        hops.append(NextHop(gateway=_ip(attr(hop, "RTA_GATEWAY")), index=int(oif) if oif else None))
    return tuple(hops)


def parse_bridge_vlans(msg: Msg) -> list[BridgeVlan]:
    """The VLANs of one port from an AF_BRIDGE link message (ranges folded back together)."""
    result: list[BridgeVlan] = []
    begin: Msg | None = None
    for info in attrs(attr(msg, "IFLA_AF_SPEC"), "IFLA_BRIDGE_VLAN_INFO"):
        flags = int(info["flags"])
        if flags & BRIDGE_VLAN_INFO_RANGE_BEGIN:
            begin = info
            continue
        first = begin if begin is not None and flags & BRIDGE_VLAN_INFO_RANGE_END else info
        vid, last = int(first["vid"]), int(info["vid"])
        result.append(
            BridgeVlan(
                vid=vid,
                vid_end=last if last != vid else None,
                pvid=bool(flags & BRIDGE_VLAN_INFO_PVID),
                untagged=bool(flags & BRIDGE_VLAN_INFO_UNTAGGED),
            )
        )
        begin = None
    return result
