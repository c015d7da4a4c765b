"""The only module that touches argv, environ, stdin, stdout and the exit code.

The executable's role comes from the name it was run as: ``bridge``, ``host-local``,
``portmap`` and ``loopback`` are the CNI plugins (an IPAM plugin receives its parent's whole
config, whose ``type`` is ``bridge``, so the config cannot choose); any other name is the
operator CLI.
"""

from __future__ import annotations

import os
import sys

from cni_bridge import PLUGIN_ROLES

# Every import here is paid by every call, VERSION included: types only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn

# The frozen build's start-up cache hook registers this module (build/rthooks/).
STARTUP_CACHE_MODULE = "_cni_bridge_startup_cache"


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
    # "CNI_BRIDGE_LOG" is call.LOG_ENV, spelt out: VERSION imports nothing more
    # (tests/unit/test_import_budget.py).
    if environ.get("CNI_COMMAND") != "VERSION" or environ.get("CNI_BRIDGE_LOG"):
        return False
    from cni_bridge.cni.supported import version_answer

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
        from cni_bridge.call import run_plugin

        exit_now(run_plugin(role))
    install_startup_cache()
    # The frozen executable starts with cyclic garbage collection off, for a plugin call's
    # short life (build/rthooks/pyi_rth_cni_bridge_startup.py); operator commands may run long.
    import gc

    gc.enable()
    from cni_bridge.admin.main import main as operator_main

    sys.exit(operator_main(argv[1:]))
