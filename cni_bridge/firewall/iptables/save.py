"""Reading ``iptables-save`` and writing ``iptables-restore --noflush`` input (pure).

Rules are kept as the text after ``-A CHAIN`` exactly as iptables-save prints it: deleting by
that text is deleting by the rule spec the kernel holds, whatever order it was written in.
Comparisons use `signature`, which ignores option order and the ``/32`` iptables adds.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from cni_bridge.cni.errors import CniError

_ALIASES = {"--source": "-s", "--destination": "-d", "--protocol": "-p", "--jump": "-j",
            "--match": "-m", "--destination-ports": "--dports", "--dst": "-d", "--src": "-s",
            "--in-interface": "-i", "--out-interface": "-o", "--source-ports": "--sports",
            "--destination-port": "--dport", "--source-port": "--sport", "--goto": "-g"}
_ADDRESS_OPTIONS = {"-s", "-d"}
Signature = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class NatState:
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def has_chain(self, chain: str) -> bool:
        return chain in self.chains

    def rules(self, chain: str) -> tuple[str, ...]:
        return self.chains.get(chain, ())

    def has_rule(self, chain: str, rule: str) -> bool:
        return signature(rule) in self._signatures.get(chain, frozenset())

    def jumps_to(self, target: str) -> list[tuple[str, str]]:
        return self._jumps.get(target, [])

    @cached_property
    def _signatures(self) -> dict[str, frozenset[Signature]]:
        return {c: frozenset(signature(r) for r in rules) for c, rules in self.chains.items()}

    @cached_property
    def _jumps(self) -> dict[str, list[tuple[str, str]]]:
        index: dict[str, list[tuple[str, str]]] = {}
        for chain, rules in self.chains.items():
            for rule in rules:
                target = option_value(rule, "-j", "--jump", "-g", "--goto")
                if target is not None:
                    index.setdefault(target, []).append((chain, rule))
        return index


def parse_save(text: str, table: str = "nat") -> NatState:
    chains: dict[str, list[str]] = {}
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_table = line == f"*{table}"
        elif not in_table or line == "COMMIT":
            continue
        elif line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            chains.setdefault(chain, []).append(rest[0] if rest else "")
        else:
            raise CniError("cannot parse iptables-save output", f"unexpected line: {line}")
    return NatState({name: tuple(rules) for name, rules in chains.items()})


@lru_cache(maxsize=65536)
def split_rule(rule: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(rule))
    except ValueError as exc:
        raise CniError("cannot parse iptables rule", f"{rule}: {exc}") from None


def option_value(rule: str, *options: str) -> str | None:
    tokens = split_rule(rule)
    return next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in options), None)


def comment_of(rule: str) -> str | None:
    return option_value(rule, "--comment")


def _groups(tokens: Sequence[str]) -> list[tuple[str, ...]]:
    groups: list[list[str]] = []
    negate = False
    for token in tokens:
        if token == "!":
            negate = True
            continue
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            groups.append(["!"] if negate else [])
            groups[-1].append(_ALIASES.get(token, token))
        elif groups:
            groups[-1].append(token)
        else:
            groups.append([token])
        negate = False
    return [tuple(_normalise_value(g)) for g in groups]


def _normalise_value(group: list[str]) -> list[str]:
    option = group[1] if group[0] == "!" else group[0]
    if option in _ADDRESS_OPTIONS and len(group) >= 2 and "/" not in group[-1]:
        group[-1] += "/128" if ":" in group[-1] else "/32"
    return group


@lru_cache(maxsize=65536)
def signature(rule: str) -> Signature:
    """Order-insensitive identity of a rule (``-m tcp`` implied by ``-p tcp`` is dropped)."""
    groups = _groups(split_rule(rule))
    protocols = {g[1] for g in groups if g[0] == "-p" and len(g) == 2}
    return tuple(sorted(g for g in groups if not (g[0] == "-m" and g[1:] and
                                                   g[1] in protocols)))


def quote(text: str) -> str:
    """As iptables-save quotes, so restore reads it back unchanged."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RestoreScript:
    """Lines for one ``iptables-restore --noflush`` call on the nat table (and the raw table's
    `raw` commands, in the same call)."""

    declare: list[str] = field(default_factory=list)  # chains to create
    lines: list[str] = field(default_factory=list)  # -A/-I/-D/-F/-X commands, in order
    # Chains every owner appends to, created before the restore with ``iptables -N``: declaring
    # one in a --noflush restore flushes it, losing the rules a concurrent call just added.
    shared: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # commands for the raw table

    def new_chain(self, chain: str) -> None:
        if chain not in self.declare:
            self.declare.append(chain)

    def new_shared_chain(self, chain: str) -> None:
        if chain not in self.shared:
            self.shared.append(chain)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def extend(self, lines: Iterable[str]) -> None:
        self.lines.extend(lines)

    def merge(self, other: RestoreScript) -> None:
        for chain in other.declare:
            self.new_chain(chain)
        for chain in other.shared:
            self.new_shared_chain(chain)
        for mine, theirs in ((self.lines, other.lines), (self.raw, other.raw)):
            known = set(mine)
            mine += [line for line in dict.fromkeys(theirs) if line not in known]

    def __bool__(self) -> bool:
        return bool(self.declare or self.lines or self.shared or self.raw)

    def render(self) -> str:
        if not self:
            return ""
        body = [f":{chain} - [0:0]" for chain in self.declare] + self.lines
        raw = ["*raw", *self.raw, "COMMIT"] if self.raw else []
        nat = ["*nat", *body, "COMMIT"] if body or not raw else []
        return "\n".join([*nat, *raw, ""])
