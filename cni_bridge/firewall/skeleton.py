"""The shared firewall skeleton every attachment relies on, checked in one read (pure).

An ADD puts per-attachment state (map elements, an iptables chain per container) on a skeleton
shared by all attachments of a backend: our nftables table with its maps and chains, and the
jumps from iptables' built-in nat chains. A firewall reload (``nft flush ruleset``, a firewalld
reload, ``iptables -t nat -F``) takes the skeleton away; a DEL never does (the skeleton stays by
design). So whether the skeleton is whole tells a reload apart from the normal coming and going of
attachments, at a cost that does not grow with them: the resident server's health watcher asks
this on every nftables change notification.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.model import MasqEntry, PortmapOptions, PortMapping, publishes_localhost
from cni_bridge.firewall.nft.plan import hairpin_subnets
from cni_bridge.firewall.nft.schema import (
    TABLE_REF,
    ChainSpec,
    entry_masq_chain,
    hostport_chains,
    hostport_net_chain,
    masq_chain,
)
from cni_bridge.firewall.nft.state import Listing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_bridge.firewall.iptables.save import NatState


def nft_masq_chains(entries: Iterable[MasqEntry]) -> list[ChainSpec]:
    """The chains of our table that masquerading `entries` goes through."""
    return [masq_chain(), *(entry_masq_chain(e) for e in entries)]


def nft_portmap_chains(entries: Sequence[PortMapping], options: PortmapOptions) -> list[ChainSpec]:
    """The chains of our table that publishing `entries` with `options` goes through."""
    localnet = any(publishes_localhost(e, options) for e in entries)
    return [*hostport_chains(options.conditions_v4, options.conditions_v6, localnet),
            *(hostport_net_chain(s) for s in hairpin_subnets(entries, options))]


def nft_missing(listing: Listing | None, chains: Iterable[ChainSpec],
                maps: Iterable[str]) -> list[str]:
    """What of the skeleton is gone: the table, a map, a chain, or every rule of a chain.

    A chain whose rule count merely differs is not reported: the shared chains carry the last
    ADD's ``conditionsV4/V6``, which may differ between networks."""
    if listing is None:
        return [f"nft table {TABLE_REF} is missing"]
    missing = [f"nft map {TABLE_REF} {m} is missing" for m in sorted(set(maps))
               if m not in listing.maps]
    for spec in {c.name: c for c in chains}.values():
        chain = listing.chains.get(spec.name)
        if chain is None:
            missing.append(f"nft chain {TABLE_REF} {spec.name} is missing")
        elif spec.rules and chain.rule_count == 0:
            missing.append(f"nft chain {TABLE_REF} {spec.name} has no rules")
    return missing


def ipt_missing(state: NatState, version: int, masquerade: bool, ports: bool,
                snat: bool) -> list[str]:
    """The nat table's jumps that our attachments of one family need: ``POSTROUTING`` to some
    per-container masquerade chain (`masquerade`), ``PREROUTING`` and ``OUTPUT`` to
    ``CNI-HOSTPORT-DNAT`` (`ports`), ``POSTROUTING`` to ``CNI-HOSTPORT-MASQ`` (`snat`)."""
    from cni_bridge.firewall.iptables.masq import (
        MASQ_CHAIN_RE,  # the nftables path never needs them
    )
    from cni_bridge.firewall.iptables.portmap import MASQ_JUMP, TOP_LEVEL_JUMP

    missing = []
    if masquerade and not any(MASQ_CHAIN_RE.match(chain)
                              for chain in state.chains if state.jumps_to(chain)):
        missing.append(f"IPv{version} nat POSTROUTING jumps to no masquerade chain")
    needed = []
    if ports:
        needed += [("PREROUTING", TOP_LEVEL_JUMP), ("OUTPUT", TOP_LEVEL_JUMP)]
    if snat:
        needed.append(("POSTROUTING", MASQ_JUMP))
    missing += [f"IPv{version} nat rule '-A {chain} {rule}' is missing"
                for chain, rule in needed if not state.has_rule(chain, rule)]
    if (ports or snat) and not state.has_chain(names.HOSTPORT_DNAT_CHAIN):
        missing.append(f"IPv{version} nat chain {names.HOSTPORT_DNAT_CHAIN} is missing")
    return missing
