"""Isolation between networks (bridge ``isolateNetworks``), in our table ``inet cni_bridge``.

Routed traffic between two isolated bridges is dropped; the self pair spares traffic inside a
bridge (br_netfilter may show it with the bridge as both interfaces). An ADD adds its bridge (and
VLAN gateway) and rewrites the chain, repairing an external flush; elements outlive containers.

THE NAMES BELOW MUST NEVER CHANGE: state written by one version is found by the next by them.
"""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.cni.errors import ConfigError
from cni_bridge.firewall.commands import CommandRunner, check
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.nft.schema import TABLE_REF, ChainSpec, render_table
from cni_bridge.firewall.nft.state import Key

ISOLATED_SET = "isolated_bridges"
SELF_SET = "isolated_bridge_self"
FORWARD_CHAIN = "isolation_forward"
DROP_COMMENT = "cni-bridge: between isolated networks"
_UNQUOTABLE = frozenset('"\\')


def _quoted(name: str) -> str:
    if not name or _UNQUOTABLE & set(name):
        raise ConfigError("cannot isolate a bridge whose name contains a quote or backslash",
                          repr(name))
    return f'"{name}"'


def forward_chain() -> ChainSpec:
    rule = (f"iifname @{ISOLATED_SET} oifname @{ISOLATED_SET} "
            f'iifname . oifname != @{SELF_SET} drop comment "{DROP_COMMENT}"')
    return ChainSpec(FORWARD_CHAIN, "type filter hook forward priority filter", (rule,))


def plan_isolate(interfaces: Sequence[str]) -> list[str]:
    lines = [render_table(),
             f"add set {TABLE_REF} {ISOLATED_SET} {{ type ifname; }}",
             f"add set {TABLE_REF} {SELF_SET} {{ type ifname . ifname; }}",
             *forward_chain().render()]
    for name in dict.fromkeys(interfaces):
        q = _quoted(name)
        lines += [f"add element {TABLE_REF} {ISOLATED_SET} {{ {q} }}",
                  f"add element {TABLE_REF} {SELF_SET} {{ {q} . {q} }}"]
    return lines


def ensure_isolated(runner: CommandRunner, interfaces: Sequence[str]) -> None:
    check(Nft(runner).apply(plan_isolate(interfaces)),
          f"cannot isolate bridge {', '.join(interfaces)} from other networks")


def _absent(nft: Nft, set_name: str, key_type: str, keys: Sequence[Key]) -> set[Key]:
    """Which of `keys` the set lacks: all at once, then one at a time only to say which."""
    family, table = TABLE_REF.split()
    if nft.has_elements(family, table, set_name, key_type, keys):
        return set()
    return {k for k in keys if not nft.has_elements(family, table, set_name, key_type, [k])}


def check_isolated(runner: CommandRunner, interfaces: Sequence[str]) -> list[str]:
    """What is missing for `interfaces` to be isolated; keyed reads only."""
    nft = Nft(runner)
    for name in interfaces:
        _quoted(name)  # a name nft cannot quote was never isolated
    family, table = TABLE_REF.split()
    names = list(dict.fromkeys(interfaces))
    problems = []
    rules = nft.chain_rules(family, table, FORWARD_CHAIN) or ()
    if not any(r.comment == DROP_COMMENT for r in rules):
        problems.append(f"the isolation rule in chain {TABLE_REF} {FORWARD_CHAIN} is missing")
    isolated = _absent(nft, ISOLATED_SET, "ifname", [(n,) for n in names])
    selves = _absent(nft, SELF_SET, "ifname . ifname", [(n, n) for n in names])
    for name in interfaces:
        if (name,) in isolated:
            problems.append(f'"{name}" is not in set {ISOLATED_SET}')
        if (name, name) in selves:
            problems.append(f'"{name}" . "{name}" is not in set {SELF_SET}')
    return problems
