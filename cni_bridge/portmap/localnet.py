"""``route_localnet`` for published localhost ports (IPv4 only; IPv6 has no equivalent).

A packet from 127.0.0.1 that is DNATed to a container must cross a routing boundary, which the
kernel refuses unless ``net.ipv4.conf.<if>.route_localnet`` is 1 on the interface that routes
to the container (REFERENCE.md §4.2). Like the reference, that interface comes from a route
lookup. The lookup asks ``ip -j route get`` (a few ms) rather than loading the netlink layer
(about 200 ms of imports on every call); the netlink layer is only the fallback when ``ip`` is
missing. The firewall backend drops 127.0.0.0/8 arriving on any interface but ``lo`` whenever
localhost is published (USERS.md item 4), so setting the sysctl does not expose it.
"""

from __future__ import annotations

import json
import logging
import os

from cni_bridge.firewall.runner import NOT_FOUND, CommandRunner
from cni_bridge.spec.errors import CniError
from cni_bridge.spec.result import IPAddress

log = logging.getLogger("cni_bridge")
PROC_CONF = "/proc/sys/net/ipv4/conf"


def sysctl_key(ifname: str) -> str:
    return f"net.ipv4.conf.{ifname}.route_localnet"


def _route_dev_via_ip(runner: CommandRunner, address: IPAddress) -> str | None:
    """The output interface of the kernel's route to `address`; "" when `ip` cannot tell."""
    result = runner(["ip", "-j", "route", "get", str(address)])
    if result.returncode == NOT_FOUND:
        return None  # no ip(8): let the caller ask netlink
    if not result.ok:
        log.warning("no route to %s: %s", address, result.stderr.strip())
        return ""
    try:
        routes = json.loads(result.stdout)
        dev = routes[0].get("dev", "") if routes else ""
    except (ValueError, AttributeError, IndexError):
        log.warning("cannot read `ip route get %s` output: %r", address, result.stdout[:200])
        return ""
    return dev if isinstance(dev, str) else ""


def _route_dev_via_netlink(address: IPAddress) -> str:
    import socket

    from cni_bridge.net.netlink import Netlink
    from cni_bridge.net.routes import get_route_to

    try:
        with Netlink.for_current() as nl:
            route = get_route_to(nl, address)
        return socket.if_indextoname(route.index) if route.index else ""
    except (CniError, OSError) as exc:
        log.warning("no route to %s: %s", address, exc)
        return ""


def route_interface(runner: CommandRunner, address: IPAddress) -> str:
    """Name of the host interface routing to `address`, or "" when there is no route."""
    dev = _route_dev_via_ip(runner, address)
    return _route_dev_via_netlink(address) if dev is None else dev


def _path(ifname: str) -> str:
    if not ifname or "/" in ifname or ifname in (".", ".."):
        raise CniError(f"invalid interface name {ifname!r} for route_localnet")
    return f"{PROC_CONF}/{ifname}/route_localnet"


def read_route_localnet(ifname: str) -> str | None:
    """The sysctl's value, or None when the interface does not exist."""
    try:
        with open(_path(ifname), encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def ensure_route_localnet(ifname: str) -> bool:
    """Set route_localnet=1 on `ifname` unless it is already; returns True when written.

    Read first: an already-right value is fine even where /proc/sys is read-only.
    """
    current = read_route_localnet(ifname)
    if current == "1":
        return False
    why = "no such interface"
    if current is not None:
        try:
            with open(_path(ifname), "w", encoding="ascii") as f:
                f.write("1")
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
        else:
            log.info("set %s=1", sysctl_key(ifname))
            return True
    raise CniError(f"unable to enable route_localnet: cannot set sysctl {sysctl_key(ifname)} "
                   f"to 1 (currently {current})", why)
