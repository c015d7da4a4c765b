"""PyInstaller run-time hook: children get the environment the runtime gave us.

On Linux the bootloader re-executes itself with LD_LIBRARY_PATH pointing at the bundle's
``_internal/`` (keeping any earlier value in LD_LIBRARY_PATH_ORIG) and with ``_PYI_*``
bookkeeping variables. This process's dynamic loader read LD_LIBRARY_PATH when it was exec'd,
so editing ``os.environ`` here changes only what child processes see: ``iptables``, ``nft``
and ``ip`` must load the system's libraries, not ours, and a delegated IPAM plugin that is
itself a PyInstaller program must not mistake our ``_PYI_*`` variables for its own.
"""

import os


def _restore_environment() -> None:
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
    for name in [name for name in os.environ if name.startswith("_PYI_")]:
        del os.environ[name]


_restore_environment()
