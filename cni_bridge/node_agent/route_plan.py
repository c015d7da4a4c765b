"""Which routes to the other nodes' pod CIDRs this node should have, and what to change (pure).
Only routes marked `ROUTE_PROTOCOL` are ever listed, replaced or removed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cni_bridge.cni.result import IPAddress, IPNetwork
from cni_bridge.net.model import RouteInfo
from cni_bridge.node_agent.nodes import NodeInfo

# Must never change: a later agent finds an earlier one's routes by it. Unused by the kernel,
# iproute2, routing daemons (BIRD 12, FRR 186-198, Calico 80) and Kubernetes networks we know.
ROUTE_PROTOCOL = 147


@dataclass(frozen=True)
class LocalNetwork:
    """A directly connected network of this namespace: an address's prefix, on its link."""

    network: IPNetwork
    address: IPAddress
    index: int


@dataclass(frozen=True)
class NodeRoute:
    """One route the agent wants: a node's pod CIDR via its InternalIP, out of `index`."""

    dst: IPNetwork
    gateway: IPAddress
    index: int
    node: str

    @property
    def key(self) -> tuple[IPNetwork, IPAddress | None, int | None]:
        return (self.dst, self.gateway, self.index)

    def describe(self) -> str:
        return f"route {self.dst} via {self.gateway} (node {self.node})"


@dataclass(frozen=True)
class RoutePlan:
    wanted: tuple[NodeRoute, ...]
    notes: tuple[str, ...]  # nodes not routed, and why (said once by the agent)


@dataclass(frozen=True)
class RouteChanges:
    add: tuple[NodeRoute, ...]
    remove: tuple[RouteInfo, ...]
    notes: tuple[str, ...]  # wanted routes left out because another route holds the prefix


def on_link(address: IPAddress, local: Sequence[LocalNetwork]) -> LocalNetwork | None:
    """The connected network `address` is on, unless it is one of our own addresses."""
    if any(net.address == address for net in local):
        return None
    return next((n for n in local if n.network.version == address.version
                 and address in n.network), None)


def plan_routes(nodes: Mapping[str, NodeInfo], me: str, local: Sequence[LocalNetwork],
                conflicts: Mapping[str, str]) -> RoutePlan:
    """One route per other node's pod CIDR via its InternalIP of that family, where on-link."""
    wanted: list[NodeRoute] = []
    notes: list[str] = []
    for node in sorted(nodes.values(), key=lambda n: n.name):
        if node.name == me or not node.pod_cidrs:
            continue
        if node.name in conflicts:
            notes.append(f"node {node.name} not routed: {conflicts[node.name]}")
            continue
        for cidr in node.pod_cidrs:
            via = node.internal_ip(cidr.version)
            if via is None:
                notes.append(f"node {node.name}: no IPv{cidr.version} InternalIP, its pod "
                             f"CIDR {cidr} is not routed")
                continue
            link = on_link(via, local)
            if link is None:
                notes.append(f"node {node.name}: InternalIP {via} is not on a directly "
                             f"connected network of this node; {cidr} is left to the "
                             "network's routing")
                continue
            wanted.append(NodeRoute(cidr, via, link.index, node.name))
    return RoutePlan(tuple(wanted), tuple(notes))


def route_key(route: RouteInfo) -> tuple[IPNetwork, IPAddress | None, int | None]:
    return (route.dst, route.gateway, route.index)


def diff_routes(wanted: Iterable[NodeRoute], existing: Iterable[RouteInfo]) -> RouteChanges:
    """Ours not wanted go; wanted missing come, unless a foreign route holds the prefix."""
    existing = list(existing)
    ours = [r for r in existing if r.protocol == ROUTE_PROTOCOL]
    foreign = {r.dst: r for r in existing if r.protocol != ROUTE_PROTOCOL}
    wanted = list(wanted)
    wanted_keys = {w.key for w in wanted}
    have = {route_key(r) for r in ours}
    remove = tuple(r for r in ours if route_key(r) not in wanted_keys)
    add: list[NodeRoute] = []
    notes: list[str] = []
    for route in wanted:
        if route.key in have:
            continue
        other = foreign.get(route.dst)
        if other is not None:
            notes.append(f"{route.describe()} not added: a route to {route.dst} that is not "
                         f"ours (protocol {other.protocol}) is there; it is left untouched")
            continue
        add.append(route)
    return RouteChanges(tuple(add), remove, tuple(notes))
