"""Node objects from the API, read once into `NodeInfo`; pod CIDR overlaps; the derived cluster
CIDR. Pure: no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cni_bridge.cni.result import IPAddress, IPNetwork


class NodeFormatError(ValueError):
    """A Node object the agent cannot read (the message names the node and the field)."""


@dataclass(frozen=True)
class NodeInfo:
    """Pod CIDRs: at most one per family, as the API guarantees."""

    name: str
    pod_cidrs: tuple[IPNetwork, ...] = ()
    internal_ips: tuple[IPAddress, ...] = ()

    def internal_ip(self, version: int) -> IPAddress | None:
        return next((a for a in self.internal_ips if a.version == version), None)


def resource_version(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion", "")) if isinstance(meta, Mapping) else ""


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    """``spec.podCIDRs`` wins over the older ``spec.podCIDR``."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise NodeFormatError("a Node object has no metadata.name")
    spec = obj.get("spec") or {}
    texts = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    try:
        cidrs = tuple(ipaddress.ip_network(str(t)) for t in texts)
    except ValueError as exc:
        raise NodeFormatError(f"node {name}: spec.podCIDRs: {exc}") from None
    addresses = (obj.get("status") or {}).get("addresses") or []
    ips: list[IPAddress] = []
    for entry in addresses:
        if isinstance(entry, Mapping) and entry.get("type") == "InternalIP":
            try:
                ips.append(ipaddress.ip_address(str(entry.get("address", ""))))
            except ValueError as exc:
                raise NodeFormatError(f"node {name}: status.addresses: {exc}") from None
    return NodeInfo(name, cidrs, tuple(ips))


def find_conflicts(nodes: Iterable[NodeInfo]) -> dict[str, str]:
    """Nodes whose pod CIDR overlaps another's -> a message naming both: which is right is not
    the agent's to decide. CIDRs overlap only when one holds the other, so sorted by start each
    is compared only with the widest reach before it: O(n log n) for a big cluster."""
    conflicts: dict[str, str] = {}
    for version in (4, 6):
        owned = sorted(((c, n.name) for n in nodes for c in n.pod_cidrs if c.version == version),
                       key=lambda item: (item[0].network_address, item[0].prefixlen, item[1]))
        reach: tuple[IPNetwork, str] | None = None  # the CIDR reaching furthest so far
        for cidr, name in owned:
            if reach is not None and int(cidr.network_address) <= \
                    int(reach[0].broadcast_address) and reach[1] != name:
                text = f"pod CIDR {cidr} of node {name} overlaps {reach[0]} of node {reach[1]}"
                conflicts.setdefault(name, text)
                conflicts.setdefault(reach[1], text)
            if reach is None or int(cidr.broadcast_address) > int(reach[0].broadcast_address):
                reach = (cidr, name)
    return conflicts


def covering_network(cidrs: Iterable[IPNetwork]) -> IPNetwork | None:
    """The smallest network holding every one of `cidrs` (all of one family), or None."""
    nets = list(cidrs)
    if not nets:
        return None
    net = nets[0]
    while not all(c.subnet_of(net) for c in nets):  # type: ignore[arg-type]
        net = net.supernet()
    return net


def derive_cluster_cidrs(nodes: Iterable[NodeInfo], versions: Iterable[int]) -> list[IPNetwork]:
    """Per family of `versions`: the smallest prefix covering every node's pod CIDR."""
    all_cidrs = [c for n in nodes for c in n.pod_cidrs]
    found = (covering_network(c for c in all_cidrs if c.version == v) for v in versions)
    return [net for net in found if net is not None]
