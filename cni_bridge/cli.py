"""The only module that touches argv, environ, stdin, stdout and the exit code.

The executable's role comes from the name it was run as: ``bridge``, ``host-local``,
``portmap`` and ``loopback`` are the CNI plugins (an IPAM plugin receives its parent's whole
config, whose ``type`` is ``bridge``, so the config cannot choose); any other name is the
operator CLI.
"""

from __future__ import annotations

import os
import sys
import time

from cni_bridge import __version__

# Every import here is paid by every call, VERSION included: types only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import NoReturn

PLUGIN_ROLES = ("bridge", "host-local", "portmap", "loopback")
# The frozen build's start-up cache hook registers this module (build/rthooks/).
STARTUP_CACHE_MODULE = "_cni_bridge_startup_cache"


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
    from cni_bridge.spec.dispatch import dispatch

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
    from cni_bridge.spec.dispatch import MAX_STDIN

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


def role_from_argv0(argv0: str) -> str:
    name = os.path.basename(argv0)
    return name if name in PLUGIN_ROLES else "cni-bridge"


def install_startup_cache() -> None:
    """Serve import-time work from the frozen build's cache (no-op from the source tree).

    Called before anything imports ``re`` or ``dataclasses``, and only on paths that import
    them: VERSION does not pay for loading the cache."""
    cache = sys.modules.get(STARTUP_CACHE_MODULE)
    if cache is not None:
        cache.install()


def answer_version_quickly(environ: Mapping[str, str]) -> bool:
    """VERSION needs no config, no validation and no call log unless one is asked for: answer
    it with the version constants alone (the dispatcher gives the same bytes)."""
    # "CNI_BRIDGE_LOG" is calllog.LOG_ENV, spelt out: importing calllog would cost VERSION
    # json and the dispatcher (tests/unit/test_import_budget.py).
    if environ.get("CNI_COMMAND") != "VERSION" or environ.get("CNI_BRIDGE_LOG"):
        return False
    from cni_bridge.spec.supported import version_answer

    os.write(1, version_answer())
    return True


def exit_now(code: int) -> NoReturn:
    """End a plugin call. The frozen executable skips the interpreter's finalization (tearing
    down ~200 modules costs ~20 ms, a sixth of a bridge ADD): the output is flushed, files and
    locks go with the process, and a plugin registers nothing to run at exit. From the source
    tree (tests call main() in-process) it is an ordinary exit."""
    if getattr(sys, "frozen", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    role = role_from_argv0(argv[0] if argv else "")
    if role in PLUGIN_ROLES:
        if answer_version_quickly(os.environ):
            exit_now(0)
        install_startup_cache()
        exit_now(run_plugin(role))
    install_startup_cache()
    # The frozen executable starts with cyclic garbage collection off, for a plugin call's
    # short life (build/rthooks/pyi_rth_cni_bridge_startup.py); operator commands may run long.
    import gc

    gc.enable()
    from cni_bridge.operator import main as operator_main

    sys.exit(operator_main(argv[1:]))
