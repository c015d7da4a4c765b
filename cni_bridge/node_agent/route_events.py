"""rtnetlink notifications that may call for a look at the routes: a link or an address
added, changed or removed (what is on-link may have changed), or a route of ours deleted (by
hand, or by the agent itself: the agent tells the two apart by whether it still wants that
route). New routes, the agent's own included, wake nothing. Read with a subscription of its
own.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable

from cni_bridge import netlink
from cni_bridge.cni.result import IPAddress, IPNetwork
from cni_bridge.node_agent.route_plan import ROUTE_PROTOCOL

GROUPS = (netlink.RTMGRP_LINK | netlink.RTMGRP_IPV4_IFADDR | netlink.RTMGRP_IPV4_ROUTE
          | netlink.RTMGRP_IPV6_IFADDR | netlink.RTMGRP_IPV6_ROUTE)
# A link going down takes its IPv4 routes with it without a notification of their deletion;
# its coming back up is what tells the agent to put them back.
LOOK_KINDS = (netlink.RTM_NEWLINK, netlink.RTM_DELLINK, netlink.RTM_NEWADDR, netlink.RTM_DELADDR)

RouteKey = tuple[IPNetwork, IPAddress | None]  # destination, gateway


def _route_key(body: bytes) -> RouteKey | None:
    """Destination and gateway of one route message (its rtmsg and attributes)."""
    dst_len = netlink.RTMSG.unpack_from(body)[1]
    attrs = netlink.parse_attrs(body[netlink.RTMSG.size:])
    try:
        dst = ipaddress.ip_address(attrs[netlink.RTA_DST])
        gateway = attrs.get(netlink.RTA_GATEWAY)
        via = None if gateway is None else ipaddress.ip_address(gateway)
    except (KeyError, ValueError):
        return None
    return ipaddress.ip_network(f"{dst}/{dst_len}", strict=False), via


def changes_in(data: bytes) -> frozenset[RouteKey] | None:
    """What a batch of notifications means (pure): None for "look" (a link or an address
    changed, or something unreadable), else (destination, gateway) of each route of ours
    deleted (often none)."""
    gone: set[RouteKey] = set()
    try:
        for offset, length, kind, _flags, _seq in netlink.frames(data):
            if kind in LOOK_KINDS:
                return None
            body = data[offset + netlink.HDR.size:offset + length]
            ours = len(body) >= netlink.RTMSG.size and body[5] == ROUTE_PROTOCOL
            if kind == netlink.RTM_DELROUTE and ours:
                key = _route_key(body)
                if key is None:
                    return None
                gone.add(key)
    except netlink.KernelError:  # malformed
        return None
    return frozenset(gone)


def watch_route_events(notify: Callable[[frozenset[RouteKey] | None], None],
                       stop: threading.Event) -> None:
    """Until `stop`: `notify(None)` when the routes need a look (also after lost
    notifications: ENOBUFS), `notify(keys)` when routes of ours were deleted."""
    events = netlink.subscribe(netlink.NETLINK_ROUTE, GROUPS)
    try:
        while not stop.is_set():
            if not events.wait(0.5):
                continue
            for data in events.drain():
                changes = None if data is None else changes_in(data)
                if changes is None or changes:
                    notify(changes)
    finally:
        events.close()
