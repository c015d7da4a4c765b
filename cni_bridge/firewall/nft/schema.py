"""The fixed layout of our nftables table ``inet cni_bridge`` (pure data and text).

Every per-container fact is one owner-tagged element of a hash map, so a container costs the
same with 0 or 10,000 others. The base chains are constant and rewritten (flush + re-add, in the
same batch) by every ADD, repairing an external flush. What depends on a subnet lives in a
chain per subnet (``masq_net4_10.88.0.0/16``) reached by verdict maps: no interval sets, whose
kernel updates grow with their size. Explicit host addresses (``hostport_ip``) win over any
(``hostport_any``). The owner maps (address -> owner id) guard removals: see names.owner_id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cni_bridge.firewall import names
from cni_bridge.firewall.model import IPNetwork, MasqEntry

# Per key or value field: puts elements read back from nft into the planners' form.
FieldKind = Literal["addr", "proto", "port", "owner", "verdict"]
TABLE_REF = f"{names.NFT_FAMILY} {names.NFT_TABLE}"


@dataclass(frozen=True)
class MapSpec:
    name: str
    key_type: str
    value_type: str
    key_fields: tuple[FieldKind, ...]
    value_fields: tuple[FieldKind, ...]

    def render(self) -> str:
        return f"add map {TABLE_REF} {self.name} {{ type {self.key_type} : {self.value_type}; }}"


@dataclass(frozen=True)
class ChainSpec:
    name: str
    hook: str | None  # e.g. "type nat hook postrouting priority srcnat"; None: regular chain
    rules: tuple[str, ...]

    def render(self) -> list[str]:
        head = f"add chain {TABLE_REF} {self.name}"
        if self.hook:
            head += f" {{ {self.hook}; policy accept; }}"
        return [head, f"flush chain {TABLE_REF} {self.name}",
                *(f"add rule {TABLE_REF} {self.name} {rule}" for rule in self.rules)]


def _addr_type(version: int) -> str:
    return "ipv4_addr" if version == 4 else "ipv6_addr"


def _ip(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def masq_maps(version: int) -> tuple[MapSpec, ...]:
    a = _addr_type(version)
    return (MapSpec(names.masq_owner_map(version), a, "mark", ("addr",), ("owner",)),
            MapSpec(names.masq_via_map(version), a, "verdict", ("addr",), ("verdict",)))


def hostport_maps(version: int) -> tuple[MapSpec, ...]:
    a = _addr_type(version)
    target = f"{a} . inet_service"
    maps = [MapSpec(names.hostport_ip_map(version), f"{a} . inet_proto . inet_service", target,
                    ("addr", "proto", "port"), ("addr", "port")),
            MapSpec(names.hostport_any_map(version), "inet_proto . inet_service", target,
                    ("proto", "port"), ("addr", "port")),
            MapSpec(names.hostport_owner_map(version), a, "mark", ("addr",), ("owner",)),
            MapSpec(names.hostport_via_map(version), a, "verdict", ("addr",), ("verdict",)),
            MapSpec(names.hostport_all_map(version), a, "mark", ("addr",), ("owner",))]
    if version == 4:
        maps.append(MapSpec(names.hostport_lo_map(version), a, "mark", ("addr",), ("owner",)))
    return tuple(maps)


def masq_chain() -> ChainSpec:
    rules = [f"ip daddr {names.MULTICAST_V4} return", f"ip6 daddr {names.MULTICAST_V6} return"]
    rules += [f"{_ip(v)} saddr vmap @{names.masq_via_map(v)}" for v in (4, 6)]
    return ChainSpec(names.MASQ_CHAIN, "type nat hook postrouting priority srcnat", tuple(rules))


def masq_net_chain(subnet: IPNetwork, non_masquerade: Iterable[IPNetwork] = ()) -> ChainSpec:
    ip = _ip(subnet.version)
    keep = tuple(f"{ip} daddr {net} return" for net in non_masquerade)
    return ChainSpec(names.subnet_chain(names.MASQ_NET_CHAIN_PREFIX, str(subnet)), None,
                     (*keep, f"{ip} daddr != {subnet} masquerade"))


def entry_masq_chain(entry: MasqEntry) -> ChainSpec:
    """Shared by the subnet: the last ADD's ``nonMasqueradeCIDRs`` apply to all of it."""
    return masq_net_chain(entry.subnet, entry.non_masquerade)


def hostport_net_chain(subnet: IPNetwork) -> ChainSpec:
    return ChainSpec(names.subnet_chain(names.HOSTPORT_NET_CHAIN_PREFIX, str(subnet)), None,
                     (f"{_ip(subnet.version)} saddr {subnet} masquerade",))


def _dnat_entry_rules(conditions_v4: tuple[str, ...],
                      conditions_v6: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for v, conditions in ((4, conditions_v4), (6, conditions_v6)):
        cond = " ".join(conditions) + " " if conditions else ""
        out.append(f"meta nfproto ipv{v} {cond}fib daddr type local "
                   f"jump {names.hostport_dnat_chain(v)}")
    return tuple(out)


def hostport_chains(conditions_v4: tuple[str, ...] = (), conditions_v6: tuple[str, ...] = (),
                    localnet: bool = False) -> tuple[ChainSpec, ...]:
    chains = []
    for v in (4, 6):
        ip = _ip(v)
        chains.append(ChainSpec(names.hostport_dnat_chain(v), None, (
            f"dnat {ip} to {ip} daddr . meta l4proto . th dport map @{names.hostport_ip_map(v)}",
            f"dnat {ip} to meta l4proto . th dport map @{names.hostport_any_map(v)}")))
    entry = _dnat_entry_rules(conditions_v4, conditions_v6)
    chains.append(ChainSpec(names.HOSTPORT_PREROUTING_CHAIN,
                            "type nat hook prerouting priority dstnat", entry))
    chains.append(ChainSpec(names.HOSTPORT_OUTPUT_CHAIN, "type nat hook output priority -100",
                            entry))
    masq = [f"ct status dnat ip saddr 127.0.0.0/8 ip daddr @{names.hostport_lo_map(4)} "
            "masquerade"]
    masq += [f"ct status dnat {_ip(v)} daddr @{names.hostport_all_map(v)} masquerade"
             for v in (4, 6)]
    masq += [f"ct status dnat {_ip(v)} daddr vmap @{names.hostport_via_map(v)}" for v in (4, 6)]
    chains.append(ChainSpec(names.HOSTPORT_MASQ_CHAIN_NFT,
                            "type nat hook postrouting priority srcnat", tuple(masq)))
    if localnet:
        chains.append(localnet_chain())
    return tuple(chains)


def localnet_chain() -> ChainSpec:
    return ChainSpec(names.HOSTPORT_LOCALNET_CHAIN, "type filter hook prerouting priority raw", (
        'iifname != "lo" ip daddr 127.0.0.0/8 drop comment "127.0.0.0/8 only on lo '
        '(route_localnet is set for published localhost ports)"',))


MAPS_BY_NAME = {m.name: m for v in (4, 6) for m in (*masq_maps(v), *hostport_maps(v))}


def render_table() -> str:
    return f'add table {TABLE_REF} {{ comment "{names.NFT_TABLE_COMMENT}"; }}'


def _subnet_chains(chains: Iterable[ChainSpec]) -> list[str]:
    unique = {c.name: c for c in chains}
    return [line for c in unique.values() for line in c.render()]


def masq_table_lines(entries: Iterable[MasqEntry] = ()) -> list[str]:
    return [render_table(), *(m.render() for v in (4, 6) for m in masq_maps(v)),
            *masq_chain().render(), *_subnet_chains(entry_masq_chain(e) for e in entries)]


def hostport_table_lines(conditions_v4: tuple[str, ...], conditions_v6: tuple[str, ...],
                      localnet: bool, subnets: Iterable[IPNetwork] = ()) -> list[str]:
    lines = [render_table(), *(m.render() for v in (4, 6) for m in hostport_maps(v))]
    lines += _subnet_chains(hostport_net_chain(s) for s in subnets)
    for chain in hostport_chains(conditions_v4, conditions_v6, localnet):
        lines.extend(chain.render())
    return lines
