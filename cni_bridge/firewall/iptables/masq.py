"""iptables masquerade planning, byte-compatible with the reference bridge plugin (pure).

``nonMasqueradeCIDRs`` (ours) adds ACCEPT rules inside the reference's chain, so the
reference's DEL removes them with it. The chain ignores ifname (as the reference's does): two
attachments share it, and unlike the reference we keep it while any jump to it remains.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.iptables.save import NatState, RestoreScript, comment_of, quote, split_rule
from cni_bridge.firewall.model import IPInterface, MasqEntry, Owner

MASQ_CHAIN_RE = re.compile(r"^CNI-[0-9a-f]{24}$")
_COMMENT_RE = re.compile(r'^name: "(?P<net>(?:[^"\\]|\\.)*)" id: "(?P<cid>(?:[^"\\]|\\.)*)"$')


def _comment(network: str, container_id: str) -> str:
    return f"-m comment --comment {quote(names.masq_comment(network, container_id))}"


def multicast(version: int) -> str:
    return names.MULTICAST_V4 if version == 4 else names.MULTICAST_V6


def accept_rules(entry: MasqEntry) -> list[str]:
    c = _comment(entry.owner.network, entry.owner.container_id)
    return [f"-d {net} {c} -j ACCEPT" for net in (entry.subnet, *entry.non_masquerade)]


def masquerade_rule(entry: MasqEntry) -> str:
    c = _comment(entry.owner.network, entry.owner.container_id)
    return f"! -d {multicast(entry.version)} {c} -j MASQUERADE"


def chain_rules(entry: MasqEntry) -> list[str]:
    return [*accept_rules(entry), masquerade_rule(entry)]


def jump_rule(entry: MasqEntry) -> str:
    chain = names.masq_chain_name(entry.owner.network, entry.owner.container_id)
    c = _comment(entry.owner.network, entry.owner.container_id)
    return f"-s {entry.address.ip}/{entry.address.max_prefixlen} {c} -j {chain}"


def plan_add_masquerade(state: NatState, entries: Sequence[MasqEntry]) -> RestoreScript:
    """Append what is missing, in the reference's order; an ACCEPT missing from a chain that
    already masquerades goes on top (after the MASQUERADE it would never match)."""
    script = RestoreScript()
    planned: set[tuple[str, str]] = set()
    for entry in entries:
        chain = names.masq_chain_name(entry.owner.network, entry.owner.container_id)
        if not state.has_chain(chain):
            script.new_chain(chain)
        masquerades = state.has_rule(chain, masquerade_rule(entry))
        for target, rule in [*[(chain, r) for r in chain_rules(entry)],
                             ("POSTROUTING", jump_rule(entry))]:
            if (target, rule) not in planned and not state.has_rule(target, rule):
                planned.add((target, rule))
                insert = masquerades and target == chain
                script.add(f"-I {target} 1 {rule}" if insert else f"-A {target} {rule}")
    return script


def _jump_matches(rule: str, addresses: Sequence[IPInterface] | None) -> bool:
    """A POSTROUTING jump for one of `addresses` (``-s IP/32``, or the older ``-s IP/prefix``)."""
    if addresses is None:
        return True
    tokens = split_rule(rule)
    source = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("-s", "--source")),
                  None)
    wanted = {f"{a.ip}/{a.max_prefixlen}" for a in addresses} | {str(a.network) for a in addresses}
    return source in wanted


def plan_remove_chain_owner(state: NatState, chain: str,
                            addresses: Sequence[IPInterface] | None) -> RestoreScript:
    script = RestoreScript()
    jumps = state.jumps_to(chain)
    doomed = [(c, r) for c, r in jumps if _jump_matches(r, addresses)]
    script.extend(f"-D {c} {r}" for c, r in doomed)
    if state.has_chain(chain) and len(doomed) == len(jumps):
        script.extend([f"-F {chain}", f"-X {chain}"])
    return script


def plan_remove_masquerade(state: NatState, owner: Owner,
                           addresses: Sequence[IPInterface] | None) -> RestoreScript:
    chain = names.masq_chain_name(owner.network, owner.container_id)
    return plan_remove_chain_owner(state, chain, addresses)


def check_masquerade(state: NatState, entries: Sequence[MasqEntry]) -> list[str]:
    missing: list[str] = []
    for entry in entries:
        chain = names.masq_chain_name(entry.owner.network, entry.owner.container_id)
        if not state.has_chain(chain):
            missing.append(f"nat chain {chain} of {entry.owner} is missing")
            continue
        for target, rule in [*[(chain, r) for r in chain_rules(entry)],
                             ("POSTROUTING", jump_rule(entry))]:
            if not state.has_rule(target, rule):
                missing.append(f"nat rule '-A {target} {rule}' is missing")
    return missing


def parse_owner_comment(comment: str | None) -> tuple[str, str] | None:
    """(network, container ID) from ``name: "<net>" id: "<cid>"`` (also after a ``dnat`` prefix)."""
    if comment is None:
        return None
    match = _COMMENT_RE.match(comment.removeprefix("dnat "))
    if not match:
        return None
    return _unescape(match["net"]), _unescape(match["cid"])


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def plan_gc_chains(state: NatState, pattern: re.Pattern[str], chain_name: Callable[[str, str], str],
                   network: str, valid_owners: Collection[Owner], own_rules: bool,
                   what: str) -> tuple[RestoreScript, list[str]]:
    """Remove each `pattern` chain of no valid owner whose comments (on the jumps to it, and
    with `own_rules` on its rules) name `network`, with its jumps."""
    valid = {chain_name(o.network, o.container_id) for o in valid_owners}
    script = RestoreScript()
    removed: list[str] = []
    for chain in sorted(state.chains):
        if not pattern.match(chain) or chain in valid:
            continue
        rules = [r for _, r in state.jumps_to(chain)]
        rules += state.rules(chain) if own_rules else ()
        owner = next((o for o in map(parse_owner_comment, map(comment_of, rules)) if o), None)
        if owner is not None and owner[0] == network:
            script.merge(plan_remove_chain_owner(state, chain, None))
            removed.append(f"{what} chain {chain} of container {owner[1]}")
    return script, removed


def plan_gc_masquerade(state: NatState, network: str,
                       valid_owners: Collection[Owner]) -> tuple[RestoreScript, list[str]]:
    return plan_gc_chains(state, MASQ_CHAIN_RE, names.masq_chain_name, network, valid_owners,
                          True, "masquerade")
