"""The operator's opt-in JSON-lines call log: one line per call (warnings go to stderr through
``diag``).

The file is chosen by env ``CNI_BRIDGE_LOG`` or the config key ``logFile`` (env wins); each line
holds role, verb, container, network, outcome, per-phase durations in milliseconds, the number
of modules the call loaded and whether the resident server (``cni-bridge serve``) ran the call.
"""

from __future__ import annotations

import json
import os
import sys
import time

from cni_bridge.cni.dispatch import Outcome
from cni_bridge.diag import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

LOG_ENV = "CNI_BRIDGE_LOG"
LOG_CONFIG_KEY = "logFile"
log = logger(__name__)


def log_path(environ: Mapping[str, str], outcome: Outcome) -> str:
    path = environ.get(LOG_ENV, "")
    if not path and outcome.request is not None:
        value = outcome.request.config.get(LOG_CONFIG_KEY)
        path = value if isinstance(value, str) else ""
    return path


def call_record(role: str, outcome: Outcome, started: float, served: bool = False,
                timeline: Mapping[str, float] | None = None) -> dict[str, Any]:
    env = outcome.env
    elapsed = time.perf_counter() - started
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "role": role,
        "verb": outcome.command,
        "container": env.container_id if env else "",
        "ifname": env.ifname if env else "",
        "network": outcome.request.network_name if outcome.request else "",
        "outcome": "error" if outcome.error else "ok",
        "duration_ms": round(elapsed * 1000, 2),
        "phases_ms": outcome.timer.phases,
        # How many modules the call had loaded by its end: its import set's size, what start-up
        # costs grow with (tests/integration/test_import_budget.py keeps it within budget).
        "modules": len(sys.modules),
        "served": served,  # run by the resident server (cni-bridge serve) for the executable
    }
    if timeline is not None:  # a served call: when it passed each step (seconds since the epoch)
        now = time.time()
        record["timeline"] = {**{k: round(v, 6) for k, v in timeline.items()},
                              "call": round(now - elapsed, 6), "logged": round(now, 6)}
    if outcome.error is not None:
        record["code"] = outcome.error.code
        record["msg"] = outcome.error.msg
    return record


def write_call_log(path: str, record: Mapping[str, Any]) -> None:
    """Append one line with a single write (O_APPEND keeps concurrent lines whole)."""
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:  # logging must never fail the call
        log.warning("cannot write call log %s: %s", path, exc)
