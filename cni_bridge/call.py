"""Executing one plugin call: environment and stdin in, output and exit code out.

Shared by the executable (`cni_bridge.entry`, real stdio) and the resident server's worker
(bytes from the caller). Nothing here touches argv or the process's exit.
"""

from __future__ import annotations

import os
import sys
import time

from cni_bridge import __version__

# Every import here is paid by every call: types only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


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
    """What one plugin call prints and how it exits (the process's I/O is the caller's job)."""

    __slots__ = ("stdout", "stderr", "exit_code")

    def __init__(self, stdout: bytes, stderr: str, exit_code: int) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code


def execute_call(role: str, environ: Mapping[str, str], read_stdin: Callable[[], bytes],
                 served: bool = False, timeline: Mapping[str, float] | None = None) -> CallOutput:
    """Run one plugin call from its environment and stdin, writing the call log if asked.

    Shared by the executable (real stdio) and the resident server (bytes from the caller,
    `served`: the call log says so, with the `timeline` of the hand-off)."""
    from cni_bridge import calllog, diag
    from cni_bridge.cni.dispatch import dispatch

    started = time.perf_counter()
    diag.configure(environ)
    outcome = dispatch(
        role, __version__, environ, read_stdin, plugin_factory(role)  # type: ignore[arg-type]
    )
    path = calllog.log_path(environ, outcome)
    if path and outcome.command:
        calllog.write_call_log(path, calllog.call_record(role, outcome, started, served,
                                                             timeline))
    # UTF-8 whatever the locale, as a Go plugin writes it.
    return CallOutput(outcome.stdout.encode("utf-8"), outcome.stderr, outcome.exit_code)


def run_plugin(role: str) -> int:
    from cni_bridge.cni.dispatch import MAX_STDIN

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
