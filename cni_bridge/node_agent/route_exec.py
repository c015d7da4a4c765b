"""Applies route changes in the agent's namespace through the net layer, and reads what the
plan needs from it (connected networks, the main table). Thin: the decisions are in route_plan.
"""

from __future__ import annotations

from collections.abc import Callable

from cni_bridge.cni.errors import CniError
from cni_bridge.net.addresses import list_addresses
from cni_bridge.net.model import RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RouteInfo, RouteSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.routes import ensure_route, list_routes, remove_route
from cni_bridge.node_agent.route_plan import ROUTE_PROTOCOL, LocalNetwork, RouteChanges


def local_networks(nl: Netlink) -> tuple[list[LocalNetwork], bool]:
    """The networks of this namespace's usable global addresses (where another node is
    on-link), and whether one is still tentative (in duplicate address detection, or waiting
    for its link: usable soon, so worth another look)."""
    usable, settling = [], False
    for a in list_addresses(nl):
        if a.scope != RT_SCOPE_UNIVERSE or a.dad_failed:
            continue
        if a.tentative:
            settling = True
        else:
            usable.append(LocalNetwork(a.interface.network, a.address, a.index))
    return usable, settling


def main_table(nl: Netlink) -> list[RouteInfo]:
    return list_routes(nl, table=RT_TABLE_MAIN)


def apply_changes(nl: Netlink, changes: RouteChanges, log: Callable[[str], None]) -> list[str]:
    """Removals first, so that a node whose address changed gets its new route. A change the
    kernel refuses does not stop the others: it is returned, and tried again soon."""
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
