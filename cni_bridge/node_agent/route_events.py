"""rtnetlink notifications that may call for a look at the routes: a link or an address
added, changed or removed (what is on-link may have changed), or a route of ours deleted (by
hand, or by the agent itself: the agent tells the two apart by whether it still wants that
route). New routes, the agent's own included, wake nothing. Read with a plain netlink socket
of its own.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
import threading
from collections.abc import Callable

from cni_bridge.cni.result import IPAddress, IPNetwork
from cni_bridge.node_agent.route_plan import ROUTE_PROTOCOL

RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR
          | RTMGRP_IPV6_ROUTE)
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_DELROUTE = 16, 17, 20, 21, 25
# A link going down takes its IPv4 routes with it without a notification of their deletion;
# its coming back up is what tells the agent to put them back.
LOOK_KINDS = (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR)
RTA_DST, RTA_GATEWAY = 1, 5
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
# type, flags
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


RouteKey = tuple[IPNetwork, IPAddress | None]  # destination, gateway


def _route_key(data: bytes, start: int, end: int) -> RouteKey | None:
    """Destination and gateway of the route message whose rtmsg starts at `start`."""
    dst_len = _RTMSG.unpack_from(data, start)[1]
    found: dict[int, IPAddress] = {}
    offset = start + _RTMSG.size
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return None
        if kind in (RTA_DST, RTA_GATEWAY):
            try:
                found[kind] = ipaddress.ip_address(data[offset + _RTATTR.size:offset + length])
            except ValueError:
                return None
        offset += _align(length)
    if RTA_DST not in found:
        return None
    return (ipaddress.ip_network(f"{found[RTA_DST]}/{dst_len}", strict=False),
            found.get(RTA_GATEWAY))


def changes_in(data: bytes) -> frozenset[RouteKey] | None:
    """What a batch of notifications means (pure): None for "look" (a link or an address
    changed, or something unreadable), else (destination, gateway) of each route of ours
    deleted (often none)."""
    gone: set[RouteKey] = set()
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
        end = offset + length
        if length < _NLMSGHDR.size or end > len(data):
            return None
        if kind in LOOK_KINDS:
            return None
        body = offset + _NLMSGHDR.size
        if kind == RTM_DELROUTE and body + _RTMSG.size <= end \
                and data[body + 5] == ROUTE_PROTOCOL:
            key = _route_key(data, body, end)
            if key is None:
                return None
            gone.add(key)
        offset += _align(length)
    return frozenset(gone)


def watch_route_events(notify: Callable[[frozenset[RouteKey] | None], None],
                       stop: threading.Event) -> None:
    """Until `stop`: `notify(None)` when the routes need a look (also after lost
    notifications: ENOBUFS), `notify(keys)` when routes of ours were deleted."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    with sock:
        sock.bind((0, GROUPS))
        while not stop.is_set():
            if not select.select([sock], [], [], 0.5)[0]:
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                notify(None)
                continue
            changes = changes_in(data)
            if changes is None or changes:
                notify(changes)
