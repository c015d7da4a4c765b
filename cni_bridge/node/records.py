"""Our record of each attachment's firewall state, to put it back after a firewall reload
(``reconcile``), show it (``status``) and garbage-collect it.

``<state root>/netns-<inode>/<network>/<containerID>.<ifname>.<plugin>.json`` (root
``/run/cni-bridge`` or ``CNI_BRIDGE_STATE_DIR``: rules do not survive a reboot, nor do their
records; a stable interface). Written atomically. ``state_root`` and ``proven_root`` are the only
ways to a namespace's directory; both check its owner file (``node.owner``, ``node.state``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

# Re-exported: where records live is asked of this module.
from cni_bridge.node.owner import OWNER_FILE as OWNER_FILE
from cni_bridge.node.owner import STATE_ENV as STATE_ENV
from cni_bridge.node.owner import TEMP_PREFIX, current_owner, read_small
from cni_bridge.node.owner import state_base as state_base

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

    Root = str | os.PathLike[str]

@dataclass(frozen=True)
class Record:
    network: str
    container_id: str
    ifname: str
    plugin: str
    data: Mapping[str, Any]


PROBE_PREFIX = "usable-"
# The state directory this process has proven its own. Kept across calls in one process: a
# process that has not left its namespace keeps it alive, so its inode cannot change owner (a
# served worker that enters the caller's namespace has another inode, unless it is the server's).
_proven: str | None = None


def namespace_dir(environ: Mapping[str, str] | None = None) -> str:
    """Whoever owns it. (Strings: pathlib and tempfile would add ~5 ms of imports a call.)"""
    return os.path.join(state_base(environ), f"netns-{os.stat('/proc/self/ns/net').st_ino}")


def state_root(environ: Mapping[str, str] | None = None) -> str:
    """This namespace's directory, claimed (``node.state.claim``) unless proven its own.
    Costs one stat, one socket and two small reads per process."""
    global _proven
    root = namespace_dir(environ)
    if _proven != root:
        mine = current_owner()
        if read_small(os.path.join(root, OWNER_FILE)) != mine:
            from cni_bridge.node import state as nodestate

            nodestate.claim(root, mine)
        _proven = root
    return root


def proven_root(environ: Mapping[str, str] | None = None) -> str | None:
    """This namespace's directory when proven its own, changing nothing; else None."""
    global _proven
    root = namespace_dir(environ)
    if _proven != root:
        if read_small(os.path.join(root, OWNER_FILE)) != current_owner():
            return None
        _proven = root
    return root


def kept_until_reboot(name: str) -> bool:
    """Bookkeeping (owner file, probe markers), not attachment state."""
    return name == OWNER_FILE or name.startswith(PROBE_PREFIX)


def probe_marker(backend: str) -> str | None:
    """Where a backend's successful probe is remembered until reboot; None while the directory
    is not proven ours (nothing is read from or written to another's)."""
    root = proven_root()
    if root is None:
        if os.path.lexists(namespace_dir()):
            return None  # a read-only verb (STATUS) must not claim it; a writing call will
        try:
            root = state_root()
        except OSError:
            return None  # an unwritable state root costs a probe, not the call
    return os.path.join(root, f"{PROBE_PREFIX}{backend}")


def _path(root: Root, network: str, container_id: str, ifname: str, plugin: str) -> str:
    # Names were validated by the dispatcher (no '/', no leading '.'), so this stays in root.
    return os.path.join(root, network, f"{container_id}.{ifname}.{plugin}.json")


def save_record(root: Root, rec: Record) -> None:
    path = _path(root, rec.network, rec.container_id, rec.ifname, rec.plugin)
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    payload = {"network": rec.network, "containerID": rec.container_id, "ifname": rec.ifname,
               "plugin": rec.plugin, "data": dict(rec.data)}
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
    try:
        # 0600, as mkstemp made it (open(tmp, "x") would give 0644 under the usual umask).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(payload))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_record(root: Root, network: str, container_id: str, ifname: str, plugin: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_path(root, network, container_id, ifname, plugin))


def record_mtime_ns(root: Root, rec: Record) -> int:
    """0: gone. Of two records claiming one address or port, the newer is believed."""
    try:
        return os.stat(_path(root, rec.network, rec.container_id, rec.ifname,
                             rec.plugin)).st_mtime_ns
    except OSError:
        return 0


def _read(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read())


def find_record(root: Root, network: str, container_id: str, ifname: str,
                plugin: str) -> Record | None:
    try:
        raw = _read(_path(root, network, container_id, ifname, plugin))
    except (OSError, ValueError):
        return None
    return Record(network, container_id, ifname, plugin, raw.get("data", {}))


def list_records(root: Root, network: str | None = None) -> Iterator[Record]:
    for net_dir in _network_dirs(root, network):
        try:
            names = sorted(n for n in os.listdir(net_dir) if n.endswith(".json"))
        except OSError:
            continue
        for name in names:
            try:
                raw = _read(os.path.join(net_dir, name))
                yield Record(raw["network"], raw["containerID"], raw["ifname"], raw["plugin"],
                             raw.get("data", {}))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a foreign or damaged file is skipped, never fatal


def _network_dirs(root: Root, network: str | None) -> list[str]:
    if network:
        return [os.path.join(root, network)]
    try:
        return sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
    except OSError:
        return []
