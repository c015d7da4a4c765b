"""The health check: is the firewall skeleton our records need still there? If not, put back
every recorded rule. Run by the server in a forked child, in the server's own namespace.

Only the skeleton is read, at a cost that does not grow with the attachments. A missing skeleton
means a firewall reload, never a DEL (DEL leaves it), so a restore cannot race a DEL into
re-adding what it just removed.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cni_bridge.firewall.commands import CommandRunner, SubprocessRunner
from cni_bridge.firewall.detect import BACKEND_NAMES, make_backend
from cni_bridge.node import records
from cni_bridge.serve.server.restore import Needs, concerns, needs_of, restore


def missing_skeleton(name: str, needs: Needs, runner: CommandRunner) -> list[str]:
    if name not in BACKEND_NAMES:  # a record naming no backend we know: nothing to check
        return []
    return make_backend(name, runner).missing_skeleton(needs)


def check(root: Path, trigger: str, runner: CommandRunner | None = None,
          force: Collection[str] = ()) -> dict[str, Any]:
    """Restore where the skeleton is gone, and for the backends in `force` whatever it says
    (their table was deleted: an ADD since may have remade the skeleton alone)."""
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
