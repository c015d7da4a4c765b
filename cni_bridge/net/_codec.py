"""The one place that imports pyroute2, lazily and narrowly: its rtnetlink message classes,
as the codec of ``RtnlSocket`` (over ``cni_bridge.netlink``).

``import pyroute2`` runs its ``__init__``, which imports every subsystem (asyncio, ndb, ipdb,
conntrack, nftables, ...): ~300 ms. So before the first import we register a bare package
module for ``pyroute2`` whose ``__path__`` points at the installed package: submodules then
import without running its ``__init__`` (~45 ms for the four message modules, a quarter of it
``pyroute2.config``, hence a stand-in for that one too). The imports are written out literally
so that PyInstaller's dependency scan finds them; names exported by the top-level ``pyroute2``
package do not exist behind the stub.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import types
from dataclasses import dataclass
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.netlink import HDR, NETLINK_ROUTE, NetlinkSocket

_PACKAGE = "pyroute2"


@dataclass(frozen=True)
class Codec:
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
    global _codec
    if _codec is None:
        try:
            _codec = _load()
        except ImportError as exc:
            raise CniError(f"cannot load the netlink message classes (pyroute2): {exc}") from None
    return _codec


def _install_config_stub() -> None:
    """Register a ``pyroute2.config`` holding what the message classes read from it.

    The real one imports ``multiprocessing``, ``platform`` and ``signal`` for sockets and
    processes we never create. ``ifinfmsg`` reads only ``AF_BRIDGE`` and two (empty) plugin
    lists (the pinned pyroute2's values below); any other name loads the real module first.
    """
    name = f"{_PACKAGE}.config"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return  # let the real import report it
    loader = spec.loader
    stub = types.ModuleType(name)

    def load_real(attr: str) -> Any:
        if attr.startswith("__"):  # the import system probing (__path__, ...): not ours
            raise AttributeError(attr)
        del stub.__dict__["__getattr__"]
        loader.exec_module(stub)  # the real code, run in this module's namespace
        return getattr(stub, attr)

    stub.__dict__.update(
        __spec__=spec,
        __file__=spec.origin,
        __loader__=loader,
        __package__=_PACKAGE,
        __getattr__=load_real,
        AF_BRIDGE=getattr(socket, "AF_BRIDGE", 7),
        data_plugins_pkgs=[],
        data_plugins_path=[],
    )
    sys.modules[name] = stub


def _load() -> Codec:
    _install_package_stub()
    _install_config_stub()
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return Codec(ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg, ndmsg=ndmsg)


def encode(msg: Any) -> bytes:
    """``msg``'s payload, after its header: ``NetlinkSocket`` writes the header it sends."""
    msg.reset()
    msg.encode()
    return bytes(msg.data)[HDR.size:]


class RtnlSocket:
    """NETLINK_ROUTE socket in the calling thread's current namespace, for pyroute2 messages."""

    def __init__(self) -> None:
        self._sock = NetlinkSocket(NETLINK_ROUTE, strict=True)

    def close(self) -> None:
        self._sock.close()

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send ``msg``; return the data replies, decoded as ``type(msg)``."""
        replies = []
        for frame in self._sock.exchange(msg_type, encode(msg), flags):
            reply = type(msg)(frame)
            reply.decode()
            replies.append(reply)
        return replies
