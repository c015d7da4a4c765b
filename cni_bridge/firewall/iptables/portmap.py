"""iptables port-mapping planning, byte-compatible with the reference portmap plugin (pure).

Only the ``CNI-HOSTPORT-MASQ`` jump is inserted at the top (CVE-2019-9946); everything else is
appended, so Kubernetes service rules keep precedence. The multiport lists come from the whole
config, all families together: pass entries in config order to get them byte-identical.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.iptables.masq import parse_owner_comment, plan_gc_chains
from cni_bridge.firewall.iptables.save import NatState, RestoreScript, comment_of, quote, signature
from cni_bridge.firewall.model import Owner, PortmapOptions, PortMapping

DNAT_CHAIN_RE = re.compile(r"^CNI-DN-[0-9a-f]{21}$")
TOP_LEVEL_JUMP = f"-m addrtype --dst-type LOCAL -j {names.HOSTPORT_DNAT_CHAIN}"
MASQ_JUMP = f"-m comment --comment {quote(names.MASQ_JUMP_COMMENT)} -j {names.HOSTPORT_MASQ_CHAIN}"


def setmark_rule(options: PortmapOptions) -> str:
    return (f"-m comment --comment {quote(names.SETMARK_COMMENT)} -j MARK "
            f"--set-xmark {options.mark}")


def masq_rule(options: PortmapOptions) -> str:
    return f"-m mark --mark {options.mark} -j MASQUERADE"


def _host_match(entry: PortMapping) -> str:
    if entry.host_ip is None:
        return ""
    return f"-d {entry.host_ip}/{entry.host_ip.max_prefixlen} "


def _port_match(entry: PortMapping) -> str:
    return f"-p {entry.protocol} -m {entry.protocol} --dport {entry.host_port}"


def _destination(entry: PortMapping) -> str:
    ip = entry.container_ip.ip
    return f"[{ip}]:{entry.container_port}" if ip.version == 6 else f"{ip}:{entry.container_port}"


def dnat_chain_rules(entries: Sequence[PortMapping], options: PortmapOptions) -> list[str]:
    setmark = options.external_set_mark_chain or names.HOSTPORT_SETMARK_CHAIN
    rules: list[str] = []
    for e in entries:
        base = f"{_host_match(e)}{_port_match(e)}"
        if options.snat:
            # iptables-save drops a match-everything source, so masqAll has no -s at all.
            source = "" if options.masq_all else f"-s {e.container_ip.network} "
            rules.append(f"{source}{base} -j {setmark}")
            if e.version == 4 and not options.masq_all:
                rules.append(f"-s 127.0.0.1/32 {base} -j {setmark}")
        rules.append(f"{base} -j DNAT --to-destination {_destination(e)}")
    return rules


def config_mappings(entries: Sequence[PortMapping]) -> list[PortMapping]:
    seen: set[tuple[str, int, str, int]] = set()
    out: list[PortMapping] = []
    for e in entries:
        key = (e.protocol, e.host_port, str(e.host_ip or ""), e.container_port)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def entry_rules(owner: Owner, all_entries: Sequence[PortMapping], version: int,
                options: PortmapOptions) -> list[str]:
    """``CNI-HOSTPORT-DNAT`` rules: protocols sorted, ports in config order, 15 per rule."""
    ports: dict[str, list[int]] = {}
    for e in config_mappings(all_entries):
        ports.setdefault(e.protocol, []).append(e.host_port)
    chain = names.dnat_chain_name(owner.network, owner.container_id)
    comment = quote(names.dnat_comment(owner.network, owner.container_id))
    conditions = " ".join(options.conditions(version))
    rules = []
    for proto in sorted(ports):
        plist = ports[proto]
        for i in range(0, len(plist), names.MULTIPORT_MAX):
            chunk = ",".join(str(p) for p in plist[i:i + names.MULTIPORT_MAX])
            rule = f"-p {proto} -m comment --comment {comment} -m multiport --dports {chunk}"
            rules.append(f"{rule} {conditions} -j {chain}" if conditions else f"{rule} -j {chain}")
    return rules


def desired_rules(owner: Owner, all_entries: Sequence[PortMapping], version: int,
                  options: PortmapOptions) -> list[tuple[str, str, bool]]:
    """(chain, rule, insert-at-1) for one owner and family, in the reference's order."""
    family = [e for e in all_entries if e.version == version]
    out: list[tuple[str, str, bool]] = []
    if options.snat and options.external_set_mark_chain is None:
        out.append((names.HOSTPORT_SETMARK_CHAIN, setmark_rule(options), False))
        out.append((names.HOSTPORT_MASQ_CHAIN, masq_rule(options), False))
        out.append(("POSTROUTING", MASQ_JUMP, True))
    out.append(("PREROUTING", TOP_LEVEL_JUMP, False))
    out.append(("OUTPUT", TOP_LEVEL_JUMP, False))
    dn = names.dnat_chain_name(owner.network, owner.container_id)
    out.extend((dn, rule, False) for rule in dnat_chain_rules(family, options))
    out.extend((names.HOSTPORT_DNAT_CHAIN, rule, False)
               for rule in entry_rules(owner, all_entries, version, options))
    return out


def _chains_needed(owner: Owner, options: PortmapOptions) -> list[str]:
    chains = []
    if options.snat and options.external_set_mark_chain is None:
        chains += [names.HOSTPORT_SETMARK_CHAIN, names.HOSTPORT_MASQ_CHAIN]
    return [*chains, names.HOSTPORT_DNAT_CHAIN,
            names.dnat_chain_name(owner.network, owner.container_id)]


def _dnat_match(rule: str) -> tuple[tuple[str, ...], ...] | None:
    """The signature of a DNAT rule's matches (host address, protocol, port), or None."""
    if " -j DNAT " not in f" {rule} ":
        return None
    return signature(rule.split(" -j DNAT", 1)[0])


Holders = dict[tuple[tuple[str, ...], ...], list[tuple[str, str]]]


def dnat_holders(state: NatState) -> Holders:
    """Per DNAT match (host address, protocol, port): the (chain, holder) of every container
    chain that DNATs it. Read once for all the owners of one transaction."""
    held: Holders = {}
    for chain, rules in state.chains.items():
        if not DNAT_CHAIN_RE.match(chain):
            continue
        found = [parse_owner_comment(comment_of(r)) for _, r in state.jumps_to(chain)]
        net_cid = next((o for o in found if o is not None), None)
        who = f"container {net_cid[1]} ({net_cid[0]})" if net_cid else f"chain {chain}"
        for rule in rules:
            match = _dnat_match(rule)
            if match is not None:
                held.setdefault(match, []).append((chain, who))
    return held


def find_conflicts(state: NatState, owner: Owner, entries: Sequence[PortMapping],
                   holders: Holders | None = None) -> list[tuple[str, str]]:
    """(host port, holder) for each of `entries` another container's chain already DNATs
    (`holders`: ``dnat_holders(state)``, when already known)."""
    ours = names.dnat_chain_name(owner.network, owner.container_id)
    held = dnat_holders(state) if holders is None else holders
    conflicts = []
    for e in entries:
        others = [who for chain, who in held.get(signature(f"{_host_match(e)}{_port_match(e)}"),
                                                   ()) if chain != ours]
        if others:
            conflicts.append((e.describe(), others[0]))
    return conflicts


def plan_add_portmappings(state: NatState, owner: Owner, all_entries: Sequence[PortMapping],
                          version: int, options: PortmapOptions) -> RestoreScript:
    """What is missing for one owner in one family; nothing when no entry is of that family."""
    script = RestoreScript()
    if not any(e.version == version for e in all_entries):
        return script
    own = names.dnat_chain_name(owner.network, owner.container_id)
    for chain in _chains_needed(owner, options):
        if not state.has_chain(chain):
            (script.new_chain if chain == own else script.new_shared_chain)(chain)
    seen: set[tuple[str, str]] = set()
    for chain, rule, insert in desired_rules(owner, all_entries, version, options):
        if (chain, rule) in seen or state.has_rule(chain, rule):
            continue
        seen.add((chain, rule))
        script.add(f"-I {chain} 1 {rule}" if insert else f"-A {chain} {rule}")
    return script


def _plan_remove_chain(state: NatState, chain: str, script: RestoreScript) -> None:
    if not state.has_chain(chain):
        return
    script.extend(f"-D {c} {r}" for c, r in state.jumps_to(chain))
    script.extend([f"-F {chain}", f"-X {chain}"])


def plan_remove_portmappings(state: NatState, owner: Owner) -> RestoreScript:
    """``CNI-DN-...`` (and the pre-2017 ``CNI-SN-...``) with their jumps; shared chains stay."""
    script = RestoreScript()
    _plan_remove_chain(state, names.dnat_chain_name(owner.network, owner.container_id), script)
    _plan_remove_chain(state, names.old_snat_chain_name(owner.network, owner.container_id),
                       script)
    return script


def check_portmappings(state: NatState, owner: Owner, all_entries: Sequence[PortMapping],
                       version: int, options: PortmapOptions) -> list[str]:
    if not any(e.version == version for e in all_entries):
        return []
    missing = [f"IPv{version} nat chain {c} is missing"
               for c in _chains_needed(owner, options) if not state.has_chain(c)]
    for chain, rule, _ in desired_rules(owner, all_entries, version, options):
        if state.has_chain(chain) and not state.has_rule(chain, rule):
            missing.append(f"IPv{version} nat rule '-A {chain} {rule}' is missing")
    return missing


def plan_gc_portmappings(state: NatState, network: str,
                         valid_owners: Collection[Owner]) -> tuple[RestoreScript, list[str]]:
    return plan_gc_chains(state, DNAT_CHAIN_RE, names.dnat_chain_name, network, valid_owners,
                          False, "port-mapping")
