"""The health check: is the firewall skeleton our records need still there? If not, put back
every recorded rule. Run by the server in a forked child, in the server's own namespace.

The check reads the skeleton only (``firewall.skeleton``): one ``nft --terse`` listing and one
``iptables-save -t nat`` per family in use, whatever the number of attachments. A missing
skeleton means a firewall reload, never a DEL (DEL leaves the skeleton), so restoring then cannot
race a DEL into re-adding what it just removed. The restore (``restore``) adds every record's
entries in chunks, a few transactions in all; the report says what could not be restored and
whether the restore failed (the server then backs off before trying again).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cni_bridge.firewall import skeleton
from cni_bridge.firewall.commands import CommandRunner, SubprocessRunner
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.node import records
from cni_bridge.serve.server.restore import Needs, concerns, needs_of, restore


def nft_missing(needs: Needs, runner: CommandRunner) -> list[str]:
    from cni_bridge.firewall.names import NFT_FAMILY, NFT_TABLE

    nft = Nft(runner)
    missing = []
    if needs.uses_our_table():
        listing = nft.skeleton(NFT_FAMILY, NFT_TABLE)
        missing += skeleton.nft_missing(listing, needs.nft_chains(), needs.nft_maps())
    if needs.spoof:
        missing += spoof_missing(nft, needs)
    return missing


def spoof_missing(nft: Nft, needs: Needs) -> list[str]:
    """The spoof-check jumps gone from ``bridge nat PREROUTING`` (one read)."""
    from cni_bridge.firewall.nft import spoofcheck

    present = {r.comment for r in nft.chain_rules("bridge", spoofcheck.TABLE,
                                                   spoofcheck.BASE_CHAIN) or ()}
    gone = [e for e in needs.spoof
            if spoofcheck.jump_comment(e.owner.container_id, e.owner.ifname) not in present]
    return [f"nft chain bridge {spoofcheck.TABLE} {spoofcheck.BASE_CHAIN} lacks the spoof "
            f"check of {len(gone)} attachment(s)"] if gone else []


def ipt_missing(needs: Needs, runner: CommandRunner) -> list[str]:
    from cni_bridge.firewall.iptables.backend import IptablesBackend

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


def check(root: Path, trigger: str, runner: CommandRunner | None = None,
          force: Collection[str] = ()) -> dict[str, Any]:
    """Check the skeleton of every backend our records use; restore where it is gone, and for
    the backends in `force` (their table was deleted: an ADD since may have made the skeleton
    again, without the other attachments' entries) whatever the skeleton says."""
    started = time.monotonic()
    runner = runner or SubprocessRunner()
    recs = list(records.list_records(root))
    report: dict[str, Any] = {"time": time.time(), "trigger": trigger, "records": len(recs),
                              "missing": [], "restored": 0, "remaining": [], "errors": [],
                              "transactions": 0, "failed": False}
    for name, needs in needs_of(recs).items():
        report["errors"] += needs.damaged
        try:
            missing = missing_skeleton(name, needs, runner)
        except Exception as exc:  # an unusable tool: report, try again later
            report["errors"].append(f"{name}: cannot read the skeleton: {exc}")
            report["failed"] = True
            continue
        if not missing and name in force:
            missing = [f"{name}: a table was deleted"]
        if missing:
            report["missing"] += missing
            _restore(root, name, runner, report)
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    return report


def _restore(root: Path, name: str, runner: CommandRunner, report: dict[str, Any]) -> None:
    # Records read again: an attachment deleted meanwhile must not come back.
    fresh = [r for r in records.list_records(root) if concerns(r, name)]
    needs = needs_of(fresh, root).get(name, Needs())
    report["errors"] += needs.conflicts
    try:
        outcome = restore(name, needs, runner)
    except Exception as exc:  # the backend itself is unusable
        report["errors"].append(f"{name}: cannot restore: {exc}")
        report["failed"] = True
        return
    report["transactions"] += outcome.transactions
    report["errors"] += outcome.failures
    report["restored"] += len(fresh)
    remaining = missing_skeleton(name, needs, runner)
    report["remaining"] += remaining
    report["failed"] = report["failed"] or bool(outcome.failures or remaining)
