"""Executing one plugin call (environment and stdin in, output and exit code out) for the
executable (`cni_bridge.entry`, real stdio) and the resident server's worker (bytes from the
caller); nothing here touches argv or the process's exit. And the operator's opt-in call log:
one JSON line per call, in the file named by env ``CNI_BRIDGE_LOG`` or config key ``logFile``.
"""

from __future__ import annotations

import os
import sys
import time

from cni_bridge import __version__, diag

# Every import here is paid by every call: types only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from cni_bridge.cni.dispatch import Outcome

LOG_ENV = "CNI_BRIDGE_LOG"
LOG_CONFIG_KEY = "logFile"
log = diag.logger(__name__)


def plugin_factory(role: str) -> Callable[[], object]:
    """Import only the module the role needs (start-up cost is paid on every CNI call)."""

    def make() -> object:
        if role == "bridge":
            from cni_bridge.bridge.plugin import BridgePlugin

            return BridgePlugin()
        if role == "host-local":
            from cni_bridge.ipam.host_local.plugin import HostLocalPlugin

            return HostLocalPlugin()
        if role == "loopback":
            from cni_bridge.loopback.plugin import LoopbackPlugin

            return LoopbackPlugin()
        from cni_bridge.portmap.plugin import PortmapPlugin

        return PortmapPlugin()

    return make


class CallOutput:
    __slots__ = ("stdout", "stderr", "exit_code")

    def __init__(self, stdout: bytes, stderr: str, exit_code: int) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code


def execute_call(role: str, environ: Mapping[str, str], read_stdin: Callable[[], bytes],
                 timeline: Mapping[str, float] | None = None) -> CallOutput:
    """`timeline`: a call run by the resident server, when it passed each step of the hand-off."""
    from cni_bridge.cni.dispatch import dispatch

    started = time.perf_counter()
    diag.configure(environ)
    outcome = dispatch(
        role, __version__, environ, read_stdin, plugin_factory(role)  # type: ignore[arg-type]
    )
    path = log_path(environ, outcome)
    if path and outcome.command:
        write_call_log(path, call_record(role, outcome, started, timeline))
    # UTF-8 whatever the locale, as a Go plugin writes it.
    return CallOutput(outcome.stdout.encode("utf-8"), outcome.stderr, outcome.exit_code)


def run_plugin(role: str) -> int:
    from cni_bridge import MAX_STDIN

    def read_stdin() -> bytes:
        # One byte over the limit is enough for the dispatcher to refuse; never more in memory.
        return sys.stdin.buffer.read(MAX_STDIN + 1)

    out = execute_call(role, dict(os.environ), read_stdin)
    if out.stderr:
        sys.stderr.write(out.stderr)
    if out.stdout:
        sys.stdout.buffer.write(out.stdout)
        sys.stdout.flush()
    return out.exit_code


def log_path(environ: Mapping[str, str], outcome: Outcome) -> str:
    path = environ.get(LOG_ENV, "")
    if not path and outcome.request is not None:
        value = outcome.request.config.get(LOG_CONFIG_KEY)
        path = value if isinstance(value, str) else ""
    return path


def call_record(role: str, outcome: Outcome, started: float,
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
        # Its import set's size, what start-up costs grow with (test_import_budget.py).
        "modules": len(sys.modules),
        "served": timeline is not None,
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
    import json

    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:  # logging must never fail the call
        log.warning("cannot write call log %s: %s", path, exc)
