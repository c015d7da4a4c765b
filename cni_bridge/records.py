"""Our own record of each attachment's firewall state, so it can be put back after a firewall
reload (``cni-bridge reconcile``), shown (``cni-bridge status``) and garbage-collected.

Records live under ``/run/cni-bridge`` (firewall rules do not survive a reboot, so neither do
their records), in a directory per network namespace (``netns-<inode>``) because firewall state
is per namespace, then per network::

    /run/cni-bridge/netns-4026531840/<network>/<containerID>.<ifname>.<plugin>.json

``CNI_BRIDGE_STATE_DIR`` overrides the root. Files are written atomically (temp file + rename),
so a reader never sees half a record. The layout is a stable interface: do not change it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_ENV = "CNI_BRIDGE_STATE_DIR"
DEFAULT_ROOT = "/run/cni-bridge"
PLUGINS = ("bridge", "portmap")


@dataclass(frozen=True)
class Record:
    network: str
    container_id: str
    ifname: str
    plugin: str
    data: Mapping[str, Any]


def state_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    root = Path(env.get(STATE_ENV) or DEFAULT_ROOT)
    return root / f"netns-{os.stat('/proc/self/ns/net').st_ino}"


PROBE_PREFIX = "usable-"


def probe_marker(backend: str) -> Path:
    """Where a firewall backend's successful probe is remembered until reboot (see
    ``firewall.detect.is_usable``): beside the records, not attachment state."""
    return state_root() / f"{PROBE_PREFIX}{backend}"


def _path(root: Path, network: str, container_id: str, ifname: str, plugin: str) -> Path:
    # Names were validated by the dispatcher (no '/', no leading '.'), so this stays in root.
    return root / network / f"{container_id}.{ifname}.{plugin}.json"


def save_record(root: Path, rec: Record) -> None:
    path = _path(root, rec.network, rec.container_id, rec.ifname, rec.plugin)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = {"network": rec.network, "containerID": rec.container_id, "ifname": rec.ifname,
               "plugin": rec.plugin, "data": dict(rec.data)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_record(root: Path, network: str, container_id: str, ifname: str, plugin: str) -> None:
    with contextlib.suppress(OSError):
        _path(root, network, container_id, ifname, plugin).unlink()


def find_record(root: Path, network: str, container_id: str, ifname: str,
                plugin: str) -> Record | None:
    path = _path(root, network, container_id, ifname, plugin)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Record(network, container_id, ifname, plugin, raw.get("data", {}))


def list_records(root: Path, network: str | None = None) -> Iterator[Record]:
    nets = [root / network] if network else sorted(p for p in root.glob("*") if p.is_dir())
    for net_dir in nets:
        for path in sorted(net_dir.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                yield Record(raw["network"], raw["containerID"], raw["ifname"], raw["plugin"],
                             raw.get("data", {}))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a foreign or damaged file is skipped, never fatal

