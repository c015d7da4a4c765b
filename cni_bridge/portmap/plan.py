"""From the parsed config and the container's addresses to the firewall layer's entries (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.firewall.model import Owner, PortmapOptions, PortMapping
from cni_bridge.portmap.config import ContainerIPs, MappingSpec, Options


def to_options(options: Options) -> PortmapOptions:
    return PortmapOptions(
        snat=options.snat,
        masq_all=options.masq_all,
        mark_masq_bit=options.mark_masq_bit,
        external_set_mark_chain=options.external_set_mark_chain,
        conditions_v4=options.conditions_v4,
        conditions_v6=options.conditions_v6,
    )


def plan_entries(owner: Owner, mappings: Sequence[MappingSpec],
                 ips: ContainerIPs) -> list[PortMapping]:
    """One entry per (mapping, container family it applies to), in config order.

    For each mapping its IPv4 entry comes before its IPv6 entry: the iptables backend builds
    its multiport lists from this order, byte-identical to the reference's. A mapping with a
    host IP only applies to that family ("0.0.0.0" and "::" included).
    """
    entries: list[PortMapping] = []
    for m in mappings:
        for ip in ips:
            if m.matches_family(ip.version):
                entries.append(PortMapping(owner, m.protocol, m.host_port, ip,
                                           m.container_port, m.host_ip))
    return entries
