"""The one place that imports pyroute2, lazily and narrowly.

``import pyroute2`` runs its ``__init__``, which imports every subsystem (asyncio, ndb, ipdb,
conntrack, nftables, ...): ~300 ms here. We need only the rtnetlink message classes, which encode
and decode ``ifinfmsg``/``ifaddrmsg``/``rtmsg``/``ndmsg``; the socket is our own (``_socket``).
So before the first import we register a bare package module for ``pyroute2`` whose ``__path__``
points at the installed package: submodules then import without running its ``__init__``.
Cost measured with ``python -X importtime``: ~45 ms for these four modules (most of it
``pyroute2.config``, which pulls in ``multiprocessing`` and ``platform``), against ~170 ms for
``pyroute2.iproute.linux`` behind the same stub and ~300 ms for ``import pyroute2``.

The imports are written out literally (not via importlib strings) so that PyInstaller's
dependency scan still finds and bundles these modules. Anything else added to this package later
(e.g. conntrack) must likewise import pyroute2 *submodules* after ``_install_package_stub()``:
names exported by the top-level ``pyroute2`` package do not exist behind the stub.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

from cni_bridge.spec.errors import CniError

_PACKAGE = "pyroute2"


@dataclass(frozen=True)
class Codec:
    """The pyroute2 message classes (untyped: ``Any``) used by this package."""

    ifinfmsg: Any
    ifaddrmsg: Any
    rtmsg: Any
    ndmsg: Any


_codec: Codec | None = None


def _install_package_stub() -> None:
    """Register an empty ``pyroute2`` package so submodule imports skip its heavy ``__init__``."""
    if _PACKAGE in sys.modules:
        return  # already imported (fully, or by us): submodules import normally
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("pyroute2 is not installed")
    stub = types.ModuleType(_PACKAGE)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    stub.__file__ = spec.origin
    stub.__package__ = _PACKAGE
    sys.modules[_PACKAGE] = stub


def codec() -> Codec:
    """Load (once) and return the message classes."""
    global _codec
    if _codec is None:
        try:
            _codec = _load()
        except ImportError as exc:
            raise CniError(f"cannot load the netlink message classes (pyroute2): {exc}") from None
    return _codec


def _load() -> Codec:
    _install_package_stub()
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return Codec(ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg, ndmsg=ndmsg)
