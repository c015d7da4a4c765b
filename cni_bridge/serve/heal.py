"""The health check: is the firewall skeleton our records need still there? If not, put back
every recorded rule. Run by the server in a forked child, in the server's own namespace.

The check reads the skeleton only (``firewall.skeleton``): one ``nft --terse`` listing and one
``iptables-save -t nat`` per family in use, whatever the number of attachments. A missing
skeleton means a firewall reload, never a DEL (DEL leaves the skeleton), so restoring then cannot
race a DEL into re-adding what it just removed. The restore adds every record's entries in a few
transactions (one per backend and option set; every add is idempotent) and falls back to the
per-record ``reconcile`` when that fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni_bridge import records
from cni_bridge.firewall import skeleton
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.model import MasqEntry, PortmapOptions, PortMapping
from cni_bridge.firewall.nft_schema import ChainSpec
from cni_bridge.firewall.runner import CommandRunner, SubprocessRunner

log = logging.getLogger(__name__)
DEFAULT_BACKEND = "nftables"


def backend_of(rec: records.Record) -> str:
    return str(rec.data.get("backend") or DEFAULT_BACKEND)


@dataclass
class Needs:
    """What the records of one backend need from the skeleton."""

    masq: list[MasqEntry] = field(default_factory=list)
    ports: dict[PortmapOptions, list[PortMapping]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)

    def nft_chains(self) -> list[ChainSpec]:
        chains = skeleton.nft_masq_chains(self.masq) if self.masq else []
        for options, entries in self.ports.items():
            chains += skeleton.nft_portmap_chains(entries, options)
        return chains

    def nft_maps(self) -> set[str]:
        from cni_bridge.firewall.nft_remove import HOSTPORT_MAPS, MASQ_MAPS

        return set(MASQ_MAPS if self.masq else ()) | set(HOSTPORT_MAPS if self.ports else ())


def needs_of(recs: Iterable[records.Record]) -> dict[str, Needs]:
    """Per backend name, the entries of its records (a damaged record is named, not fatal)."""
    from cni_bridge.firewall.recorded import masq_entries, port_entries

    out: dict[str, Needs] = {}
    for rec in recs:
        needs = out.setdefault(backend_of(rec), Needs())
        try:
            if rec.plugin == "bridge":
                needs.masq += masq_entries(rec)
            elif rec.plugin == "portmap":
                mappings, options = port_entries(rec)
                if mappings:
                    needs.ports.setdefault(options, []).extend(mappings)
        except Exception as exc:
            needs.damaged.append(f"record {rec.network}/{rec.container_id}.{rec.ifname}."
                                 f"{rec.plugin}: {exc}")
    return out


def nft_missing(needs: Needs, runner: CommandRunner) -> list[str]:
    from cni_bridge.firewall.names import NFT_FAMILY, NFT_TABLE
    from cni_bridge.firewall.nft_io import Nft

    listing = Nft(runner).skeleton(NFT_FAMILY, NFT_TABLE)
    return skeleton.nft_missing(listing, needs.nft_chains(), needs.nft_maps())


def ipt_missing(needs: Needs, runner: CommandRunner) -> list[str]:
    from cni_bridge.firewall.iptables import IptablesBackend

    backend = IptablesBackend(runner)
    missing = []
    for version in (4, 6):
        masq = any(e.version == version for e in needs.masq)
        family = [(o, e) for o, entries in needs.ports.items() for e in entries
                  if e.version == version]
        if not masq and not family:
            continue
        snat = any(o.snat and o.external_set_mark_chain is None for o, _ in family)
        missing += skeleton.ipt_missing(backend.state(version), version, masq, bool(family), snat)
    return missing


def missing_skeleton(name: str, needs: Needs, runner: CommandRunner) -> list[str]:
    if name == "nftables":
        return nft_missing(needs, runner)
    if name == "iptables":
        return ipt_missing(needs, runner)
    return []


def restore(name: str, needs: Needs, runner: CommandRunner) -> None:
    """Every entry of `needs` in a few transactions (adds are idempotent)."""
    backend = make_backend(name, runner)
    if needs.masq:
        backend.add_masquerade(needs.masq)
    for options, entries in needs.ports.items():
        backend.add_portmappings(entries, options)


def restore_each(recs: Sequence[records.Record]) -> list[str]:
    """The per-record way (``reconcile``): slower, but one bad record spoils only itself."""
    from cni_bridge.inspect import restore_rules

    errors = []
    for rec in recs:
        try:
            restore_rules(rec)
        except Exception as exc:
            errors.append(f"{rec.network}/{rec.container_id}/{rec.ifname} {rec.plugin}: {exc}")
    return errors


def check(root: Path, trigger: str, runner: CommandRunner | None = None) -> dict[str, Any]:
    """Check the skeleton of every backend our records use; restore where it is gone."""
    started = time.monotonic()
    runner = runner or SubprocessRunner()
    recs = list(records.list_records(root))
    report: dict[str, Any] = {"time": time.time(), "trigger": trigger, "records": len(recs),
                              "missing": [], "restored": 0, "remaining": [], "errors": []}
    for name, needs in needs_of(recs).items():
        report["errors"] += needs.damaged
        try:
            missing = missing_skeleton(name, needs, runner)
        except Exception as exc:  # an unusable tool: report, try again next time
            report["errors"].append(f"{name}: cannot read the skeleton: {exc}")
            continue
        if not missing:
            continue
        report["missing"] += missing
        # Records read again: an attachment deleted meanwhile must not come back.
        fresh = [r for r in records.list_records(root) if backend_of(r) == name]
        try:
            restore(name, needs_of(fresh).get(name, Needs()), runner)
        except Exception as exc:
            log.warning("restoring %s in a few transactions failed (%s); record by record",
                        name, exc)
            report["errors"] += restore_each(fresh)
        report["restored"] += len(fresh)
        report["remaining"] += missing_skeleton(name, needs_of(fresh).get(name, Needs()), runner)
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    return report
