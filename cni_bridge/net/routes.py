"""Routes: add, remove, list, default routes, and the kernel's route lookup for an address."""

from __future__ import annotations

import errno
from typing import Any

from cni_bridge.net._parse import parse_route
from cni_bridge.net.addresses import family_of
from cni_bridge.net.links import LinkRef, index_of
from cni_bridge.net.model import (
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RouteInfo,
    RouteSpec,
)
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import (
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    RTM_DELROUTE,
    RTM_GETROUTE,
    RTM_NEWROUTE,
)

RTPROT_BOOT = 3
RTN_UNICAST = 1
RT_SCOPE_NOWHERE = 255  # in a delete: match any scope


def describe_route(spec: RouteSpec) -> str:
    parts = [f"route {spec.dst}"]
    if spec.gateway is not None:
        parts.append(f"via {spec.gateway}")
    if spec.index is not None:
        parts.append(f"dev index {spec.index}")
    if spec.table not in (None, RT_TABLE_MAIN):
        parts.append(f"table {spec.table}")
    if spec.priority is not None:
        parts.append(f"metric {spec.priority}")
    return " ".join(parts)


def _default_scope(spec: RouteSpec) -> int:
    if spec.scope is not None:
        return spec.scope
    # As `ip route add`: an IPv4 route without a gateway is on-link.
    if spec.gateway is None and spec.dst.version == 4:
        return RT_SCOPE_LINK
    return RT_SCOPE_UNIVERSE


def route_msg(nl: Netlink, spec: RouteSpec, *, delete: bool = False) -> Any:
    """An ``rtmsg`` for ``spec``; a delete leaves type/scope (and protocol unless given) as
    wildcards."""
    table = RT_TABLE_MAIN if spec.table is None else spec.table
    msg = nl.codec.rtmsg()
    msg["family"] = family_of(spec.dst.version)
    msg["dst_len"] = spec.dst.prefixlen
    msg["table"] = table if table < 256 else 0
    if delete:
        msg["scope"] = RT_SCOPE_NOWHERE if spec.scope is None else spec.scope
        if spec.protocol is not None:  # the kernel deletes only a route of that protocol
            msg["proto"] = spec.protocol
    else:
        msg["proto"] = RTPROT_BOOT if spec.protocol is None else spec.protocol
        msg["type"], msg["scope"] = RTN_UNICAST, _default_scope(spec)
    attrs: list[Any] = [("RTA_TABLE", table)]
    if spec.dst.prefixlen:
        attrs.append(("RTA_DST", str(spec.dst.network_address)))
    if spec.gateway is not None:
        attrs.append(("RTA_GATEWAY", str(spec.gateway)))
    if spec.index is not None:
        attrs.append(("RTA_OIF", spec.index))
    if spec.priority is not None:
        attrs.append(("RTA_PRIORITY", spec.priority))
    if spec.src is not None:
        attrs.append(("RTA_PREFSRC", str(spec.src)))
    metrics = [("RTAX_MTU", spec.mtu), ("RTAX_ADVMSS", spec.advmss)]
    metrics = [(name, value) for name, value in metrics if value]
    if metrics:
        attrs.append(("RTA_METRICS", {"attrs": metrics}))
    msg["attrs"] = attrs
    return msg


def add_route(nl: Netlink, spec: RouteSpec, *, append: bool = False) -> None:
    """Add a route; an existing one with the same key is an error, unless ``append`` (ECMP:
    another path is added to it, as the reference plugin does for container routes)."""
    flags = NLM_F_CREATE | (NLM_F_APPEND if append else NLM_F_EXCL)
    nl.call(f"cannot add {describe_route(spec)}", route_msg(nl, spec), RTM_NEWROUTE, flags)


def ensure_route(nl: Netlink, spec: RouteSpec) -> bool:
    """Add a route; False if one with the same destination, metric and table already exists."""
    msg = route_msg(nl, spec)
    what = f"cannot add {describe_route(spec)}"
    replies = nl.call(what, msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, tolerate=(errno.EEXIST,))
    return replies is not None


def remove_route(nl: Netlink, spec: RouteSpec) -> bool:
    """Delete a matching route; False if there was none (or its interface is gone)."""
    msg = route_msg(nl, spec, delete=True)
    what = f"cannot remove {describe_route(spec)}"
    gone = (errno.ESRCH, errno.ENOENT, errno.ENODEV)
    return nl.call(what, msg, RTM_DELROUTE, tolerate=gone) is not None


def list_routes(
    nl: Netlink,
    version: int | None = None,
    *,
    table: int | None = RT_TABLE_MAIN,
    link: LinkRef | None = None,
) -> list[RouteInfo]:
    """Routes of one table (None: all tables), optionally one IP version and one output link."""
    index = None if link is None else index_of(nl, link)
    msg = nl.codec.rtmsg()
    msg["family"] = family_of(version)
    attrs: list[Any] = []
    if table is not None:
        msg["table"] = table if table < 256 else 0
        attrs.append(("RTA_TABLE", table))
    if index is not None:
        attrs.append(("RTA_OIF", index))
    msg["attrs"] = attrs
    replies = nl.call(f"cannot list routes in {nl.where}", msg, RTM_GETROUTE, NLM_F_DUMP) or []
    routes = [parse_route(reply) for reply in replies]
    return [
        r
        for r in routes
        if (table is None or r.table == table)
        and (index is None or r.index == index or any(h.index == index for h in r.nexthops))
        and (version is None or r.dst.version == version)
    ]
