"""Applies route changes in the agent's namespace through the net layer, and reads what the
plan needs from it (connected networks, the main table). Thin: the decisions are in route_plan.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
from collections.abc import Callable

from cni_bridge.net.addresses import list_addresses
from cni_bridge.net.model import RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RouteInfo, RouteSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.routes import ensure_route, list_routes, remove_route
from cni_bridge.node_agent.route_plan import ROUTE_PROTOCOL, LocalNetwork, RouteChanges
from cni_bridge.spec.errors import CniError

# Multicast groups whose events may mean our routes need a look: routes and addresses.
RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
ROUTE_EVENT_GROUPS = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
RTM_NEWADDR, RTM_DELADDR, RTM_DELROUTE = 20, 21, 25
_NLMSGHDR = struct.Struct("=IHHII")
_RTM_PROTOCOL_OFFSET = _NLMSGHDR.size + 5  # struct rtmsg: family, dst_len, src_len, tos, table,
# protocol, ...


def wants_look(data: bytes) -> bool:
    """Whether a batch of rtnetlink notifications calls for a reconcile: a route of ours gone
    (removed by hand), or an address added or removed (what is on-link may have changed). New
    routes, including the agent's own, do not (pure)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
        if length < _NLMSGHDR.size:
            return True  # garbled: look anyway
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            return True
        proto_at = offset + _RTM_PROTOCOL_OFFSET
        if kind == RTM_DELROUTE and proto_at < len(data) and data[proto_at] == ROUTE_PROTOCOL:
            return True
        offset += (length + 3) & ~3
    return False


def watch_route_events(wake: Callable[[], None], stop: threading.Event) -> None:
    """Call `wake` for notifications that `wants_look` (and after lost ones: ENOBUFS), in the
    calling thread's namespace, until `stop` is set."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    with sock:
        sock.bind((0, ROUTE_EVENT_GROUPS))
        while not stop.is_set():
            if not select.select([sock], [], [], 0.5)[0]:
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                wake()  # notifications were lost: look anyway
                continue
            if wants_look(data):
                wake()


def local_networks(nl: Netlink) -> list[LocalNetwork]:
    """The networks of this namespace's global addresses (where another node is on-link)."""
    return [LocalNetwork(a.interface.network, a.address, a.index)
            for a in list_addresses(nl)
            if a.scope == RT_SCOPE_UNIVERSE and not a.tentative and not a.dad_failed]


def main_table(nl: Netlink) -> list[RouteInfo]:
    return list_routes(nl, table=RT_TABLE_MAIN)


def apply_changes(nl: Netlink, changes: RouteChanges, log: Callable[[str], None]) -> list[str]:
    """Removals first, so that a node whose address changed gets its new route. A change the
    kernel refuses does not stop the others: it is returned, and tried again at the next look."""
    failed: list[str] = []
    for old in changes.remove:
        spec = RouteSpec(dst=old.dst, gateway=old.gateway, index=old.index,
                         priority=old.priority, protocol=ROUTE_PROTOCOL)
        try:
            if remove_route(nl, spec):
                via = f" via {old.gateway}" if old.gateway else ""
                log(f"route removed: {old.dst}{via}")
        except CniError as exc:
            failed.append(str(exc))
    for new in changes.add:
        spec = RouteSpec(dst=new.dst, gateway=new.gateway, index=new.index,
                         protocol=ROUTE_PROTOCOL)
        try:
            if ensure_route(nl, spec):
                log(f"route added: {new.dst} via {new.gateway} (node {new.node})")
        except CniError as exc:
            failed.append(f"{exc} (node {new.node})")
    return failed
