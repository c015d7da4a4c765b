"""The nftables backend: owner-tagged map elements in our own table ``inet cni_bridge``.

Costs per call, none growing with the node: ADD and DEL are one batch each, and our table is
read only when that batch fails (a key already held: how a conflict is reported by name). CHECK
reads the table's outline and this owner's elements by key over netlink. Removal by owner tag
and GC read our table. ``conditionsV4/V6`` go into the shared prerouting/output rules (as with
the reference's nftables backend, the last ADD's conditions win).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cni_bridge.cni.errors import ConfigError
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Removal
from cni_bridge.firewall.commands import CommandRunner
from cni_bridge.firewall.model import (
    IPInterface,
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    RuleSet,
    conditions_backend,
    publishes_localhost,
    validate_mappings,
    validate_options,
)
from cni_bridge.firewall.nft import plan, remove, schema
from cni_bridge.firewall.nft import reference as reference_nft
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.nft.executor import NFT
from cni_bridge.firewall.nft.remove import HOSTPORT_MAPS, MASQ_MAPS, OUR_TABLE
from cni_bridge.firewall.nft.schema import TABLE_REF, ChainSpec
from cni_bridge.firewall.nft.state import Element, Listing

log = logger(__name__)


class NftablesBackend:
    name = "nftables"

    def __init__(self, runner: CommandRunner, binary: str = NFT,
                 reference_layouts: bool = True, leftovers: Removal | None = None) -> None:
        self._runner = runner
        self._nft = Nft(runner, binary)
        self._reference_layouts = reference_layouts
        self._leftovers = leftovers

    def available(self) -> bool:
        return self._nft.usable(schema.render_table())

    # --- masquerade ------------------------------------------------------------------------

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None:
        if entries:
            planned = [p for e in entries for p in plan.masq_elements(e)]
            self._add(schema.masq_table_lines(entries), planned, "masquerade")

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        if addresses is not None and not addresses:
            return
        remove.remove_owner(self._nft, remove.MASQUERADE, owner,
                            remove.masq_keys(owner, addresses), self._reference_layouts)
        if self._leftovers is not None:
            self._leftovers.remove_masquerade(owner, addresses)

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]:
        if not entries:
            return []
        planned = [p for e in entries for p in plan.masq_elements(e)]
        return self._check(masq_chains(entries), MASQ_MAPS, planned)

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        listing = self._ours() or Listing()
        doomed = plan.gc_elements(listing, network, valid_owners, MASQ_MAPS)
        lines = [plan.delete_line(el) for el in doomed] + plan.unused_subnet_chains(listing, doomed)
        ref_lines, ref_removed = reference_nft.plan_gc_masq(
            self._nft.table(*reference_nft.REF_MASQ) or Listing(), network, valid_owners)
        self._nft.apply_checked(lines + ref_lines, f"cannot garbage-collect masquerade of "
                                                   f"network {network}")
        return [_describe(el) for el in doomed] + ref_removed

    # --- port mappings ---------------------------------------------------------------------

    def add_portmappings(self, entries: Sequence[PortMapping], options: PortmapOptions) -> None:
        _validate_nft_options(options)
        validate_mappings(entries)
        if not entries:
            return
        localnet = any(publishes_localhost(e, options) for e in entries)
        table = schema.hostport_table_lines(options.conditions_v4, options.conditions_v6, localnet,
                                            plan.hairpin_subnets(entries, options))
        self._add(table, plan.portmap_elements(entries, options), "port mappings")

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None:
        if entries is not None and not entries:
            return
        remove.remove_owner(self._nft, remove.HOSTPORTS, owner,
                            remove.hostport_keys(entries), self._reference_layouts)
        if self._leftovers is not None:
            self._leftovers.remove_portmappings(owner, entries, options)

    def check_portmappings(self, entries: Sequence[PortMapping],
                           options: PortmapOptions) -> list[str]:
        if not entries:
            return []
        return self._check(portmap_chains(entries, options), HOSTPORT_MAPS,
                           plan.portmap_elements(entries, options))

    def gc_portmappings(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        listing = self._ours() or Listing()
        doomed = plan.gc_elements(listing, network, valid_owners, HOSTPORT_MAPS)
        lines = [plan.delete_line(el) for el in doomed] + plan.unused_subnet_chains(listing, doomed)
        self._nft.apply_checked(lines, f"cannot garbage-collect host ports of network {network}")
        return [_describe(el) for el in doomed]

    # --- shared ----------------------------------------------------------------------------

    def _ours(self) -> Listing | None:
        return self._nft.table(*OUR_TABLE)

    def _add(self, table: list[str], planned: list[plan.Planned], what: str) -> None:
        if self._nft.apply(table + plan.plan_add(planned)).ok:
            return
        lines, conflicts, replaced = plan.resolve_add(self._ours() or Listing(), planned)
        if conflicts:
            raise plan.conflict_error(conflicts)
        for el in replaced:
            log.warning("replacing stale %s held by %s", _describe(el),
                        plan.describe_owner(el.comment))
        self._nft.apply_checked(table + lines, f"cannot add {what} to nft table {TABLE_REF}")

    def _check(self, chains: Sequence[ChainSpec], maps: frozenset[str],
               planned: list[plan.Planned]) -> list[str]:
        """Keyed reads; the whole table only when an element is missing, to say what is wrong."""
        outline = self._nft.outline(*OUR_TABLE)
        if outline is None:
            return [f"nft table {TABLE_REF} is missing"]
        found = self._nft.lookup(list({(p.element.map, p.element.key): p.element
                                       for p in planned}.values()))
        if found is None:
            found = self._ours() or Listing()
        missing = plan.check_outline(outline, chains, sorted(maps))
        return missing + plan.check_elements(found, planned)

    def missing_skeleton(self, rules: RuleSet) -> list[str]:
        missing = []
        if rules.masq or rules.ports or rules.isolate:
            chains, maps = skeleton_of(rules)
            missing += shared_missing(self._nft.outline(*OUR_TABLE), chains, maps)
        if rules.spoof:
            from cni_bridge.firewall.nft.spoofcheck import missing_jumps

            missing += missing_jumps(self._nft, rules.spoof)
        return missing


def skeleton_of(rules: RuleSet) -> tuple[list[ChainSpec], set[str]]:
    chains = masq_chains(rules.masq) if rules.masq else []
    for options, entries in rules.ports.items():
        chains += portmap_chains(entries, options)
    if rules.isolate:
        from cni_bridge.firewall.nft.isolation import forward_chain

        chains.append(forward_chain())
    return chains, set(MASQ_MAPS if rules.masq else ()) | set(HOSTPORT_MAPS if rules.ports else ())


def masq_chains(entries: Sequence[MasqEntry]) -> list[ChainSpec]:
    return [schema.masq_chain(), *(schema.entry_masq_chain(e) for e in entries)]


def portmap_chains(entries: Sequence[PortMapping], options: PortmapOptions) -> list[ChainSpec]:
    localnet = any(publishes_localhost(e, options) for e in entries)
    return [*schema.hostport_chains(options.conditions_v4, options.conditions_v6, localnet),
            *(schema.hostport_net_chain(s) for s in plan.hairpin_subnets(entries, options))]


def shared_missing(outline: Listing | None, chains: Sequence[ChainSpec],
                   maps: Collection[str]) -> list[str]:
    """The table, maps, chains or chains' rules that are gone. A differing rule count is not
    reported: shared chains carry the last ADD's ``conditionsV4/V6``."""
    if outline is None:
        return [f"nft table {TABLE_REF} is missing"]
    missing = [f"nft map {TABLE_REF} {m} is missing" for m in sorted(set(maps))
               if m not in outline.maps]
    for spec in {c.name: c for c in chains}.values():
        chain = outline.chains.get(spec.name)
        if chain is None:
            missing.append(f"nft chain {TABLE_REF} {spec.name} is missing")
        elif spec.rules and chain.rule_count == 0:
            missing.append(f"nft chain {TABLE_REF} {spec.name} has no rules")
    return missing


def _describe(el: Element) -> str:
    return f"nft element {' . '.join(el.key)} in {el.map} of {plan.describe_owner(el.comment)}"


def _validate_nft_options(options: PortmapOptions) -> None:
    validate_options(options)
    if options.external_set_mark_chain is not None:
        raise ConfigError("externalSetMarkChain is only supported by the iptables backend")
    for key, tokens in (("conditionsV4", options.conditions_v4),
                        ("conditionsV6", options.conditions_v6)):
        if conditions_backend(tokens) == "iptables":
            raise ConfigError(f"{key} {list(tokens)} are iptables matches; the nftables backend "
                              "needs nft expressions")
