"""Putting every recorded rule back after a firewall reload, in a few transactions.

One owner per key: two records claiming one address or host port (one left by a lost DEL) would
put two values under one map key, and the kernel refuses the whole transaction. The newer record
wins; the other's entry is reported. Entries go in chunks (one transaction each); a failing
chunk is halved to find the bad entries, within `ISOLATION_BUDGET` more transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from cni_bridge.firewall import recorded
from cni_bridge.firewall.commands import CommandRunner
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.model import MasqEntry, Owner, PortMapping, RuleSet, SpoofEntry
from cni_bridge.node import records

CHUNK = 500
SPOOF_CHUNK = 50  # attachments: each is two chains and up to 14 rules
ISOLATION_BUDGET = 64
Entry = TypeVar("Entry", MasqEntry, PortMapping, SpoofEntry, str)


def concerns(rec: records.Record, name: str) -> bool:
    return recorded.backend_of(rec) == name or (
        name == recorded.NFT_ONLY and rec.plugin == "bridge" and recorded.has_nft_only_rules(rec))


def record_name(rec: records.Record) -> str:
    return f"record {rec.network}/{rec.container_id}.{rec.ifname}.{rec.plugin}"


@dataclass
class Needs(RuleSet):
    damaged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


class Claims:
    """Who holds which key (an address, a host port): first come, first served."""

    def __init__(self) -> None:
        self.holders: dict[tuple[str, ...], tuple[Owner, str]] = {}

    def take(self, owner: Owner, keys: Sequence[tuple[str, ...]], who: str) -> str | None:
        """None when claimed; else the name of the other owner holding one of `keys`."""
        for key in keys:
            held = self.holders.get(key)
            if held is not None and held[0] != owner:
                return held[1]
        for key in keys:
            self.holders.setdefault(key, (owner, who))
        return None


def describe(entry: MasqEntry | PortMapping | SpoofEntry | str) -> str:
    if isinstance(entry, str):
        return f"isolation of bridge {entry}"
    o = entry.owner
    if isinstance(entry, MasqEntry):
        what = f"masquerade of {entry.address.ip}"
    elif isinstance(entry, SpoofEntry):
        what = f"spoof check of {entry.host_veth}"
    else:
        host = f"[{entry.host_ip}]" if entry.host_ip and entry.version == 6 else entry.host_ip
        what = (f"host port {host or '*'}:{entry.host_port}/{entry.protocol} -> "
                f"{entry.container_ip.ip}:{entry.container_port}")
    return f"{what} of container {o.container_id} ({o.network}/{o.ifname})"


def port_keys(entry: PortMapping) -> list[tuple[str, ...]]:
    host = ("port", str(entry.version), str(entry.host_ip or "*"), entry.protocol,
            str(entry.host_port))
    return [host, ("container", str(entry.container_ip.ip))]


def needs_of(recs: Iterable[records.Record], root: Path | None = None) -> dict[str, Needs]:
    """Per backend name, its records' entries; with `root` newest first (the newer wins)."""
    ordered = list(recs)
    if root is not None:
        ordered.sort(key=lambda r: records.record_mtime_ns(root, r), reverse=True)
    out: dict[str, Needs] = {}
    claims: dict[str, Claims] = {}
    for rec in ordered:
        name = recorded.backend_of(rec)
        needs = out.setdefault(name, Needs())
        try:
            _gather(needs, claims.setdefault(name, Claims()), rec)
            if rec.plugin == "bridge":
                _gather_nft_only(out, claims.setdefault(recorded.NFT_ONLY, Claims()), rec)
        except Exception as exc:
            needs.damaged.append(f"{record_name(rec)}: {exc}")
    return out


def _gather_nft_only(out: dict[str, Needs], claims: Claims, rec: records.Record) -> None:
    """A host veth name is given out again: a stale spoof check must not land on another's."""
    spoof, bridges = recorded.spoof_entry(rec), recorded.isolated_bridges(rec)
    if spoof is None and not bridges:
        return
    needs = out.setdefault(recorded.NFT_ONLY, Needs())
    if spoof is not None:
        holder = claims.take(spoof.owner, [("veth", spoof.host_veth)], record_name(rec))
        _keep(needs, needs.spoof, spoof, holder, record_name(rec))
    needs.isolate += [b for b in bridges if b not in needs.isolate]


def _gather(needs: Needs, claims: Claims, rec: records.Record) -> None:
    who = record_name(rec)
    if rec.plugin == "bridge":
        for e in recorded.masq_entries(rec):
            holder = claims.take(e.owner, [("masq", str(e.address.ip))], who)
            _keep(needs, needs.masq, e, holder, who)
    elif rec.plugin == "portmap":
        mappings, options = recorded.port_entries(rec)
        for m in mappings:
            holder = claims.take(m.owner, port_keys(m), who)
            _keep(needs, needs.ports.setdefault(options, []), m, holder, who)
        if not needs.ports.get(options):
            needs.ports.pop(options, None)


def _keep(needs: Needs, into: list[Entry], entry: Entry, holder: str | None, who: str) -> None:
    if holder is None:
        into.append(entry)
    else:
        needs.conflicts.append(f"{describe(entry)} ({who}) not restored: the newer {holder} "
                               "claims the same key")


@dataclass
class Outcome:
    transactions: int = 0
    failures: list[str] = field(default_factory=list)
    budget: int = ISOLATION_BUDGET  # transactions left for isolating bad entries


def chunks(entries: Sequence[Entry], size: int) -> list[Sequence[Entry]]:
    return [entries[i:i + size] for i in range(0, len(entries), size)]


def restore(name: str, needs: Needs, runner: CommandRunner, size: int | None = None) -> Outcome:
    size = size or CHUNK
    backend = make_backend(name, runner)
    out = Outcome()
    for part in chunks(needs.masq, size):
        _apply(backend.add_masquerade, part, out)
    for options, entries in needs.ports.items():
        for ports in chunks(entries, size):
            _apply(partial(backend.add_portmappings, options=options), ports, out)
    if needs.isolate:
        _apply(partial(recorded.add_isolation, runner), needs.isolate, out)
    for spoof in chunks(needs.spoof, SPOOF_CHUNK):
        _apply(partial(recorded.add_spoofchecks, runner), spoof, out)
    return out


def _apply(add: Callable[[Sequence[Entry]], None], entries: Sequence[Entry],
           out: Outcome) -> None:
    out.transactions += 1
    try:
        add(entries)
        return
    except Exception as exc:  # any backend failure: isolate it, report it
        error = exc
    if len(entries) > 1 and out.budget >= 2:
        out.budget -= 2
        half = len(entries) // 2
        _apply(add, entries[:half], out)
        _apply(add, entries[half:], out)
        return
    what = describe(entries[0]) if len(entries) == 1 else \
        f"{len(entries)} entries from {describe(entries[0])} on"
    out.failures.append(f"cannot restore {what}: {error}")
