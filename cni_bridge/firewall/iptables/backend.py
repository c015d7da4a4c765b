"""The iptables backend: the reference plugins' chains and rules, byte for byte.

Per call and family (iptables has no cross-family transaction): one ``iptables-save``, then,
only when something must change, one ``iptables-restore --noflush`` planned from it; planned
again once if the table moved in between. Shared chains are made with ``iptables -N`` outside
the restore: declaring one in a --noflush restore would flush a concurrent call's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial

from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.diag import logger
from cni_bridge.firewall import names
from cni_bridge.firewall.backend import Removal
from cni_bridge.firewall.commands import XTABLES_LOCK_WAIT, CommandResult, CommandRunner, check
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.iptables import exact as ipt_exact
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.save import NatState, RestoreScript, parse_save, quote
from cni_bridge.firewall.model import (
    IPInterface,
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    RuleSet,
    conditions_backend,
    group_by_owner,
    needs_route_localnet,
    validate_mappings,
    validate_options,
)

log = logger(__name__)
Planner = Callable[[NatState], RestoreScript]


@dataclass(frozen=True)
class IptablesTools:
    save: str
    restore: str
    command: str


TOOLS = {4: IptablesTools("iptables-save", "iptables-restore", "iptables"),
         6: IptablesTools("ip6tables-save", "ip6tables-restore", "ip6tables")}


LOCALNET_DROP = ("!", "-i", "lo", "-d", "127.0.0.0/8", "-m", "comment", "--comment",
                 "cni-bridge: 127.0.0.0/8 only on lo (route_localnet is set for published "
                 "localhost ports)", "-j", "DROP")
# In raw PREROUTING, so it sees packets before any NAT.
LOCALNET_DROP_RULE = " ".join(quote(t) if " " in t else t for t in LOCALNET_DROP)


def lacks_localnet_drop(raw: NatState | None) -> bool:
    return raw is not None and not raw.has_rule("PREROUTING", LOCALNET_DROP_RULE)


@dataclass(frozen=True)
class Tables:
    nat: NatState
    raw: NatState | None = None


class IptablesBackend:
    name = "iptables"

    def __init__(self, runner: CommandRunner, lock_wait: int = XTABLES_LOCK_WAIT,
                 tools: dict[int, IptablesTools] | None = None, recorded: bool = False,
                 leftovers: Removal | None = None) -> None:
        """`recorded`: our ADD's record proves the owner's state is here alone, as our ADD wrote
        it: removals first delete by exact text, unread (iptables.exact)."""
        self._run = runner
        self._recorded = recorded
        self._lock_wait = lock_wait
        self._tools = tools or TOOLS
        self._leftovers = leftovers

    def available(self) -> bool:
        return self._run([self._tools[4].save, "-t", "nat"]).ok

    def _read(self, version: int, raw: bool = False) -> CommandResult:
        """Every table at once when the raw table is wanted too: one process instead of two."""
        tool = self._tools[version].save
        return self._run([tool] if raw else [tool, "-t", "nat"])

    def tables(self, version: int, raw: bool = False) -> Tables:
        result = check(self._read(version, raw), f"cannot read the IPv{version} nat table")
        return Tables(parse_save(result.stdout), parse_save(result.stdout, "raw") if raw else None)

    def state(self, version: int) -> NatState:
        return self.tables(version).nat

    def _transact(self, version: int, plan: Planner, what: str, optional: bool = False,
                  localnet: bool = False) -> bool:
        """Read, plan, restore; on failure once more. `optional`: skip (False) a family whose
        table cannot be read (a DEL cannot know its ADD's families; ip6tables may be missing).
        """
        for attempt in (1, 2):
            read = self._read(version, raw=localnet)
            if not read.ok and optional:
                log.debug("IPv%d nat table not readable, skipped: %s", version, read.stderr)
                return False
            text = check(read, f"cannot read the IPv{version} nat table").stdout
            script = plan(parse_save(text))
            if localnet and lacks_localnet_drop(parse_save(text, "raw")):
                script.raw.append(f"-A PREROUTING {LOCALNET_DROP_RULE}")
            if not script:
                return True
            for chain in script.shared:  # fails harmlessly when a concurrent call made it
                self._run([self._tools[version].command, "-w", str(self._lock_wait), "-t", "nat",
                           "-N", chain])
            result = self._restore(version, script)
            if result.ok:
                return True
            if attempt == 2 or result.returncode == 4:
                check(result, what)
            log.info("%s: retrying after %s", what, result.stderr.strip())
        return True

    def _restore(self, version: int, script: RestoreScript) -> CommandResult:
        argv = [self._tools[version].restore, "--noflush", "-w", str(self._lock_wait)]
        return self._run(argv, input=script.render())

    def _exactly(self, version: int, script: RestoreScript) -> bool:
        """Whether the exact removal went through; else nothing changed and the caller reads.
        Even exit 4 (iptables-nft-restore's for a chain in use): a busy lock fails later."""
        result = self._restore(version, script)
        if not result.ok:
            log.debug("exact IPv%d removal did not apply (%s): reading", version,
                      result.stderr.strip())
        return result.ok

    def _each_family(self, versions: Sequence[int], plan: Callable[[int], Planner],
                     what: str) -> None:
        done = [self._transact(v, plan(v), f"cannot {what} (IPv{v})", optional=True)
                for v in versions]
        if versions and not any(done):
            raise CniError(f"cannot {what}: neither iptables-save nor ip6tables-save works")

    # --- masquerade ------------------------------------------------------------------------

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None:
        for version in sorted({e.version for e in entries}):
            family = [e for e in entries if e.version == version]
            self._transact(version, partial(ipt_masq.plan_add_masquerade, entries=family),
                           f"cannot add IPv{version} masquerade rules")

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        if addresses is not None and not addresses:
            return

        def family(version: int) -> list[IPInterface] | None:
            return None if addresses is None else [a for a in addresses if a.version == version]

        def plan(version: int) -> Planner:
            return partial(ipt_masq.plan_remove_masquerade, owner=owner,
                           addresses=family(version))

        versions = self._versions(addresses)
        if self._recorded and addresses is not None:
            versions = [v for v in versions if not self._exactly(
                v, ipt_exact.masq_removal(owner, family(v) or []))]
        self._each_family(versions, plan, f"remove masquerade rules of {owner}")
        if self._leftovers is not None:
            self._leftovers.remove_masquerade(owner, addresses)

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]:
        missing: list[str] = []
        for version in sorted({e.version for e in entries}):
            family = [e for e in entries if e.version == version]
            missing += ipt_masq.check_masquerade(self.state(version), family)
        return missing

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        return self._gc(lambda s: ipt_masq.plan_gc_masquerade(s, network, valid_owners),
                        f"masquerade of network {network}")

    # --- port mappings ---------------------------------------------------------------------

    def add_portmappings(self, entries: Sequence[PortMapping], options: PortmapOptions) -> None:
        _validate_ipt_options(options)
        validate_mappings(entries)
        # route_localnet would let a LAN neighbour reach 127.0.0.1-bound services: the IPv4
        # restore adds the raw drop for 127.0.0.0/8 from outside lo (shared, never removed).
        localnet = needs_route_localnet(entries, options)
        owners = group_by_owner(entries)
        whose = str(next(iter(owners))) if len(owners) == 1 else f"{len(owners)} containers"
        for version in sorted({e.version for e in entries}):
            plan = partial(_plan_add_portmappings, owners=owners, version=version,
                           options=options)
            self._transact(version, plan, f"cannot add IPv{version} port mappings of {whose}",
                           localnet=localnet and version == 4)

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None:
        if entries is not None and not entries:
            return
        plan = partial(ipt_portmap.plan_remove_portmappings, owner=owner)
        versions = self._versions(entries)
        if self._recorded and entries is not None:
            versions = [v for v in versions if not self._exactly(
                v, ipt_exact.portmap_removal(owner, entries, v, options or PortmapOptions()))]
        self._each_family(versions, lambda _version: plan, f"remove port mappings of {owner}")
        if self._leftovers is not None:
            self._leftovers.remove_portmappings(owner, entries, options)

    def check_portmappings(self, entries: Sequence[PortMapping],
                           options: PortmapOptions) -> list[str]:
        missing: list[str] = []
        localnet = needs_route_localnet(entries, options)
        for owner, mine in group_by_owner(entries).items():
            for version in sorted({e.version for e in mine}):
                tables = self.tables(version, raw=localnet and version == 4)
                missing += ipt_portmap.check_portmappings(tables.nat, owner, mine, version,
                                                          options)
                if lacks_localnet_drop(tables.raw):
                    missing.append(
                        "raw PREROUTING rule dropping 127.0.0.0/8 from outside lo is missing")
        return missing

    def gc_portmappings(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        return self._gc(lambda s: ipt_portmap.plan_gc_portmappings(s, network, valid_owners),
                        f"host ports of network {network}")

    def missing_skeleton(self, rules: RuleSet) -> list[str]:
        missing = []
        for version in (4, 6):
            masq = any(e.version == version for e in rules.masq)
            family = [(o, e) for o, entries in rules.ports.items() for e in entries
                      if e.version == version]
            if masq or family:
                snat = any(o.snat and o.external_set_mark_chain is None for o, _ in family)
                missing += shared_missing(self.state(version), version, masq, bool(family), snat)
        return missing

    # --- shared ----------------------------------------------------------------------------

    @staticmethod
    def _versions(items: Sequence[IPInterface] | Sequence[PortMapping] | None) -> list[int]:
        return [4, 6] if items is None else sorted({a.version for a in items})

    def _gc(self, plan: Callable[[NatState], tuple[RestoreScript, list[str]]],
            what: str) -> list[str]:
        found: dict[int, list[str]] = {}

        def planner(version: int, state: NatState) -> RestoreScript:
            script, removed = plan(state)
            found[version] = removed  # the plan that ran last is the one applied
            return script

        self._each_family((4, 6), lambda version: partial(planner, version),
                          f"garbage-collect {what}")
        return [item for version in sorted(found) for item in found[version]]


def _plan_add_portmappings(state: NatState, owners: dict[Owner, list[PortMapping]],
                           version: int, options: PortmapOptions) -> RestoreScript:
    """Every owner in one script, after refusing host ports another container DNATs."""
    script = RestoreScript()
    holders = ipt_portmap.dnat_holders(state)
    for owner, mine in owners.items():
        family = [e for e in mine if e.version == version]
        conflicts = ipt_portmap.find_conflicts(state, owner, family, holders)
        if conflicts:
            raise HostPortConflictError("; ".join(
                f"host port {port} is already published by {who}" for port, who in conflicts),
                holders=conflicts)
        script.merge(ipt_portmap.plan_add_portmappings(state, owner, mine, version, options))
    return script


def shared_missing(state: NatState, version: int, masquerade: bool, ports: bool,
                   snat: bool) -> list[str]:
    missing = []
    if masquerade and not any(ipt_masq.MASQ_CHAIN_RE.match(chain)
                              for chain in state.chains if state.jumps_to(chain)):
        missing.append(f"IPv{version} nat POSTROUTING jumps to no masquerade chain")
    needed = []
    if ports:
        needed += [(chain, ipt_portmap.TOP_LEVEL_JUMP) for chain in ("PREROUTING", "OUTPUT")]
    if snat:
        needed.append(("POSTROUTING", ipt_portmap.MASQ_JUMP))
    missing += [f"IPv{version} nat rule '-A {chain} {rule}' is missing"
                for chain, rule in needed if not state.has_rule(chain, rule)]
    if (ports or snat) and not state.has_chain(names.HOSTPORT_DNAT_CHAIN):
        missing.append(f"IPv{version} nat chain {names.HOSTPORT_DNAT_CHAIN} is missing")
    return missing


def _validate_ipt_options(options: PortmapOptions) -> None:
    validate_options(options)
    for key, tokens in (("conditionsV4", options.conditions_v4),
                        ("conditionsV6", options.conditions_v6)):
        if conditions_backend(tokens) == "nftables":
            raise ConfigError(f"{key} {list(tokens)} are nft expressions; the iptables backend "
                              "needs iptables matches")
