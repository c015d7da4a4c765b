"""Running the real plugin classes in-process with their system side replaced.

Two layers, installed together by ``sandbox()``:

- **stubs** (the replaced network side): the container namespace cannot be opened, firewall tools
  are "not installed", a delegated IPAM plugin answers with an error, host-local's store lives
  under a temp root whatever ``ipam.dataDir`` says. A stub answers like the real thing would
  fail (a CniError), so plugins take their ordinary error paths; each use is counted.
- **guards** below the stubs: netlink sockets, loading libnftables, ``setns``, writable
  sysctls, and starting any
  process (``subprocess``, ``os.fork``/``exec*``/``posix_spawn``/``system``), and any write
  under ``/proc/sys`` or ``/sys`` (``open``/``os.open``) raise
  ``GuardTripped``, a BaseException the dispatcher does not catch, so the test fails. Nothing
  in-process can touch the machine's network, whatever the fuzzer feeds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pkgutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError

STUB_CODE = 199  # plugin-specific range: never a code a plugin would print for these inputs


class GuardTripped(BaseException):
    """Something tried to reach the system during in-process fuzzing."""


class StubReached(CniError):
    code = STUB_CODE


@dataclass
class Sandbox:
    root: Path  # every store and state dir lives under here
    stubs: Counter[str] = field(default_factory=Counter)
    trips: list[str] = field(default_factory=list)

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    def trip(self, what: str) -> GuardTripped:
        self.trips.append(what)
        return GuardTripped(f"in-process fuzzing reached {what}")

    def stub_total(self) -> int:
        return sum(self.stubs.values())

    def confine(self, data_dir: str) -> str:
        """The directory a store is really opened in: `data_dir` itself when under the root."""
        resolved = os.path.abspath(data_dir)
        if resolved.startswith(str(self.data_root) + os.sep):
            return data_dir
        self.stubs["data_dir_remapped"] += 1
        digest = hashlib.sha256(data_dir.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return str(self.data_root / "remapped" / digest)


def _install_guards(mp: pytest.MonkeyPatch, box: Sandbox) -> None:
    from cni_bridge import netlink as netlink_layer
    from cni_bridge.firewall.nft import libnft as nft_lib
    from cni_bridge.net import netlink, netns, sysctl

    def refuse(what: str) -> Any:
        def guard(*args: Any, **kwargs: Any) -> Any:
            raise box.trip(what)
        return guard

    mp.setattr(subprocess.Popen, "__init__", refuse("subprocess.Popen"))
    for name in ("fork", "forkpty", "execv", "execve", "execvp", "execvpe", "posix_spawn",
                 "posix_spawnp", "system", "popen", "setns", "unshare"):
        if hasattr(os, name):
            mp.setattr(os, name, refuse(f"os.{name}"))
    real_socket_init = socket.socket.__init__

    def socket_init(self: socket.socket, family: Any = -1, *args: Any, **kwargs: Any) -> None:
        if family == getattr(socket, "AF_NETLINK", object()):
            raise box.trip("a netlink socket")
        real_socket_init(self, family, *args, **kwargs)

    mp.setattr(socket.socket, "__init__", socket_init)
    mp.setattr(netlink.Netlink, "__init__", refuse("cni_bridge.net.netlink.Netlink"))
    mp.setattr(netlink_layer, "_open", refuse("a netlink socket"))
    mp.setattr(netns, "_setns", refuse("setns"))
    mp.setattr(nft_lib, "_load", refuse("libnftables"))
    mp.setattr(netns, "enter_netns", refuse("enter_netns"))
    real_sysctl_open = sysctl._open

    def sysctl_open(key: str, ns: Any, writable: bool) -> Any:
        if writable:
            raise box.trip(f"a writable sysctl {key}")
        return real_sysctl_open(key, ns, writable)

    mp.setattr(sysctl, "_open", sysctl_open)

    # Any write under /proc/sys or /sys, whatever module opens it (builtins.open or os.open).
    import builtins

    real_open, real_os_open = builtins.open, os.open

    def is_system_path(file: Any) -> bool:
        if not isinstance(file, (str, bytes, os.PathLike)):
            return False
        path = os.path.abspath(os.fsdecode(file))
        return path.startswith(("/proc/sys/", "/sys/", "/proc/self/", "/proc/thread-self/"))

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and is_system_path(file):
            raise box.trip(f"a write to {file}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR) and is_system_path(path):
            raise box.trip(f"a write to {path}")
        return real_os_open(path, flags, *args, **kwargs)

    mp.setattr(builtins, "open", guarded_open)
    mp.setattr(os, "open", guarded_os_open)


def _install_stubs(mp: pytest.MonkeyPatch, box: Sandbox) -> None:
    from cni_bridge.bridge import plugin as bridge_plugin
    from cni_bridge.firewall.commands import CommandResult, SubprocessRunner
    from cni_bridge.firewall.nft import client as nft_io
    from cni_bridge.ipam import facade
    from cni_bridge.ipam.host_local import plugin as hl_plugin
    from cni_bridge.ipam.host_local.config import StoreLocation
    from cni_bridge.ipam.host_local.file_store import FileStore

    def stub(what: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            box.stubs[what] += 1
            raise StubReached(f"fuzz stub: {what} is not available in-process")
        return fail

    # The container side: no namespace can be opened and no netlink socket made, in whichever
    # plugin module asks (DEL tolerates that, ADD fails). Modules are found by name so that a
    # refactoring that moves the calls does not slip past (the guards below would catch it).
    class StubNetlink:
        for_current = staticmethod(stub("Netlink.for_current"))
        for_netns = staticmethod(stub("Netlink.for_netns"))

    def bridge_name_free(cfg: Any) -> None:
        box.stubs["check_bridge_name_free"] += 1

    replacements = {"open_netns": stub("open_netns"), "sockets": stub("netlink sockets"),
                    "Netlink": StubNetlink, "check_bridge_name_free": bridge_name_free}
    for name, module in sorted(sys.modules.items()):
        if module is None or not name.startswith(("cni_bridge.bridge.", "cni_bridge.portmap.")):
            continue
        for attr, value in replacements.items():
            if hasattr(module, attr):
                mp.setattr(module, attr, value)

    # Firewall tools are "not installed": every backend reports itself unusable.
    def no_tools(self: Any, argv: Any, input: str | None = None) -> CommandResult:
        box.stubs["firewall tool"] += 1
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: not available in-process")

    mp.setattr(SubprocessRunner, "__call__", no_tools)

    # nftables is reached in-process (libnftables, netlink reads) only by the production runner:
    # here it goes through that runner too, and finds no nft.
    mp.setattr(nft_io, "runs_here", lambda runner, binary="nft": False)

    # A delegated IPAM plugin answers with an error instead of being executed.
    def ipam_runner(argv: Any, stdin: bytes, env: Any) -> facade.Completed:
        box.stubs["delegated IPAM"] += 1
        return facade.Completed(1, b'{"code": 11, "msg": "fuzz stub: delegated IPAM"}')

    real_ipam_for = facade.ipam_for

    def ipam_for(req: Any, extra_arg_keys: frozenset[str] = frozenset(),
                 runner: Any = None) -> Any:
        return real_ipam_for(req, extra_arg_keys, runner=ipam_runner)

    mp.setattr(bridge_plugin, "ipam_for", ipam_for)
    mp.setattr(facade, "run_executable", ipam_runner)

    # host-local's store: under the sandbox root, whatever dataDir says.
    class ConfinedStore(FileStore):
        @classmethod
        def open(cls, location: StoreLocation, *, create: bool,
                 lock_timeout: float = 1.0) -> FileStore | None:
            confined = StoreLocation(box.confine(location.data_dir), location.network)
            return FileStore.open(confined, create=create, lock_timeout=1.0)

    mp.setattr(hl_plugin, "FileStore", ConfinedStore)
    real_resolv = hl_plugin.read_resolv_conf

    def read_resolv_conf(path: str) -> Any:
        if not os.path.abspath(path).startswith(str(box.root) + os.sep):
            box.stubs["resolvConf"] += 1
            raise CniError(f"fuzz stub: resolvConf {path!r} outside the sandbox", code=5)
        return real_resolv(path)

    mp.setattr(hl_plugin, "read_resolv_conf", read_resolv_conf)

    # portmap: no route lookups, no conntrack, no route_localnet (its firewall work already has
    # no tools).
    try:
        from cni_bridge.portmap import ops as portmap_ops
    except ImportError:
        return

    def no_route(address: Any) -> str:
        box.stubs["route lookup"] += 1
        return ""

    def no_conntrack(entries: Any) -> int:
        box.stubs["conntrack"] += 1
        return 0

    mp.setattr(portmap_ops.localnet, "route_interface", no_route)
    mp.setattr(portmap_ops, "flush_udp_conntrack", no_conntrack)
    mp.setattr(portmap_ops.localnet, "ensure_route_localnet", stub("route_localnet"))
    mp.setattr(portmap_ops.localnet, "read_route_localnet", stub("route_localnet"))


PLUGIN_PACKAGES = ("cni_bridge.cni", "cni_bridge.net", "cni_bridge.firewall", "cni_bridge.ipam",
                   "cni_bridge.ipam.host_local", "cni_bridge.bridge", "cni_bridge.portmap")


def import_plugin_modules() -> list[str]:
    """Import what the plugins may import; a module that fails here fails the plugin calls that
    need it too, where the tests report it."""
    failed = []
    for package_name in PLUGIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # noqa: BLE001
                failed.append(f"{info.name}: {exc}")
    return failed


@contextlib.contextmanager
def sandbox(root: Path) -> Iterator[Sandbox]:
    """Stubs and guards installed for the duration; `root` holds every file written."""
    box = Sandbox(root)
    box.data_root.mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    mp = pytest.MonkeyPatch()
    try:
        # Import every plugin module now: the stubs must reach modules the plugins would only
        # import lazily, and no import may happen under the guards.
        import_plugin_modules()
        mp.setenv("CNI_BRIDGE_STATE_DIR", str(root / "state"))
        mp.delenv("CNI_BRIDGE_LOG", raising=False)
        _install_stubs(mp, box)
        _install_guards(mp, box)
        yield box
    finally:
        mp.undo()


def files_under(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {str(p.relative_to(path)) for p in path.rglob("*")}
