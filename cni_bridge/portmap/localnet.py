"""``route_localnet`` for published localhost ports (IPv4 only; IPv6 has no equivalent).

A packet from 127.0.0.1 that is DNATed to a container must cross a routing boundary, which the
kernel refuses unless ``net.ipv4.conf.<if>.route_localnet`` is 1 on the interface that routes
to the container (REFERENCE.md §4.2), found as the reference does by a route lookup (what
``ip route get`` sends), hand-packed: pyroute2's codec would cost every ADD and CHECK
publishing a port 52 more modules, 58 ms (measured). The firewall backend drops 127.0.0.0/8
arriving on any interface but ``lo`` whenever localhost is published, so this exposes nothing.
"""

from __future__ import annotations

import _socket
import os
import struct

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import IPAddress
from cni_bridge.diag import logger
from cni_bridge.netlink import (
    NETLINK_ROUTE,
    RTA_DST,
    RTA_OIF,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTMSG,
    NetlinkSocket,
    attr,
    parse_attrs,
)

log = logger(__name__)
PROC_CONF = "/proc/sys/net/ipv4/conf"


def sysctl_key(ifname: str) -> str:
    return f"net.ipv4.conf.{ifname}.route_localnet"


def route_interface(address: IPAddress) -> str:
    """Name of the host interface routing to `address`, or "" when there is no route."""
    family = _socket.AF_INET if address.version == 4 else _socket.AF_INET6
    request = (RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
               + attr(RTA_DST, address.packed))
    try:
        with NetlinkSocket(NETLINK_ROUTE) as nl:
            replies = nl.request(RTM_GETROUTE, request)
        for kind, body in replies:
            oif = parse_attrs(body[RTMSG.size:]).get(RTA_OIF) if kind == RTM_NEWROUTE else None
            if oif is not None:
                return str(_socket.if_indextoname(struct.unpack("=I", oif)[0]))
    except OSError as exc:
        log.warning("no route to %s: %s", address, exc)
    return ""


def read_route_localnet(ifname: str) -> str | None:
    """The sysctl's value, or None when the interface does not exist (read on every ADD and
    CHECK: a plain read, no ``net.sysctl`` import)."""
    try:
        with open(f"{PROC_CONF}/{ifname}/route_localnet", encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def ensure_route_localnet(ifname: str) -> bool:
    """Set route_localnet=1 on `ifname` unless it is already; returns True when written.

    Read first: an already-right value is fine even where /proc/sys is read-only. A plain
    write, not ``net.sysctl``: that costs the first ADD per interface 5 modules (measured)."""
    current = read_route_localnet(ifname)
    if current == "1":
        return False
    why = "no such interface"
    if current is not None:
        try:
            with open(f"{PROC_CONF}/{ifname}/route_localnet", "w", encoding="ascii") as f:
                f.write("1")
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
        else:
            log.info("set %s=1", sysctl_key(ifname))
            return True
    raise CniError(f"unable to enable route_localnet: cannot set sysctl {sysctl_key(ifname)} "
                   f"to 1 (currently {current})", why)
