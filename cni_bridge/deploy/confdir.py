"""The networks configured in a conf dir, read as a runtime reads them (libcni's conflist rules)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni_bridge.bridge.config import DEFAULT_BRIDGE
from cni_bridge.cni.env import valid_name
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.versions import CURRENT_VERSION, at_least, parse_version
from cni_bridge.ipam.host_local.config import DEFAULT_DATA_DIR

CONF_SUFFIXES = (".conflist", ".conf", ".json")


class ConflistError(Exception):
    """A runtime-side failure: bad configuration, plugin not found, verb refused."""


@dataclass(frozen=True)
class NetworkList:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    raw: bytes = b""  # the list as loaded; cached in base64 like libcni


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return value is True or str(value).lower() == "true"
    raise ConflistError(f"{key} must be true or false, not {value!r}")


def parse_network_list(data: bytes | str | Mapping[str, Any]) -> NetworkList:
    if isinstance(data, Mapping):
        doc, raw = dict(data), json.dumps(data, indent=2).encode()
    else:
        raw = data.encode() if isinstance(data, str) else data
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ConflistError(f"the configuration is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConflistError("the configuration is not a JSON object")
    if "plugins" not in doc and "type" in doc:  # a single-plugin .conf, as libcni accepts
        doc = {"cniVersion": doc.get("cniVersion", ""), "name": doc.get("name"), "plugins": [doc]}
    name, plugins = doc.get("name"), doc.get("plugins")
    if not isinstance(name, str) or not valid_name(name):
        raise ConflistError(f"invalid or missing network name {name!r}")
    if not isinstance(plugins, list) or not plugins:
        raise ConflistError(f"network {name}: 'plugins' must be a non-empty list")
    for plugin in plugins:
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind or "/" in kind:
            raise ConflistError(f"network {name}: every plugin needs a 'type' without '/'")
    # libcni drops `cniVersions` entries it does not speak, adds `cniVersion`, takes the highest.
    versions = [v for v in doc.get("cniVersions") or [] if _speaks(v)] + [doc.get("cniVersion")]
    if doc.get("cniVersion") and not _speaks(doc["cniVersion"], any_version=True):
        raise ConflistError(f"network {name}: invalid cniVersion {doc['cniVersion']!r}")
    version = max((v for v in versions if v), key=parse_version, default="0.1.0")
    return NetworkList(name, version, tuple(plugins), raw=raw,
                       disable_check=_as_bool(doc.get("disableCheck", False), "disableCheck"),
                       disable_gc=_as_bool(doc.get("disableGC", False), "disableGC"))


def _speaks(version: Any, any_version: bool = False) -> bool:
    """Whether `version` is valid and (unless `any_version`) at most the one we speak."""
    try:
        return isinstance(version, str) and bool(parse_version(version)) and (
            any_version or at_least(CURRENT_VERSION, version))
    except CniError:
        return False


@dataclass(frozen=True)
class NetworkConf:
    net: NetworkList
    path: Path | None
    bridge: str | None  # None: the list has no bridge plugin
    data_dir: str | None  # None: IPAM is not host-local
    backend: str | None  # the configured firewall backend, if any
    subnets: tuple[str, ...]

    @classmethod
    def of(cls, net: NetworkList, path: Path | None = None) -> NetworkConf:
        bridge = next((p for p in net.plugins if p.get("type") == "bridge"), None)
        portmap = next((p for p in net.plugins if p.get("type") == "portmap"), {})
        ipam = (bridge or {}).get("ipam") or {}
        host_local = ipam.get("type") == "host-local"
        subnets = [r.get("subnet", "") for rs in ipam.get("ranges") or [] for r in rs]
        if ipam.get("subnet"):
            subnets.append(ipam["subnet"])
        return cls(
            net=net, path=path,
            bridge=(bridge.get("bridge") or DEFAULT_BRIDGE) if bridge is not None else None,
            data_dir=(ipam.get("dataDir") or DEFAULT_DATA_DIR) if host_local else None,
            backend=(bridge or {}).get("ipMasqBackend") or portmap.get("backend"),
            subnets=tuple(s for s in subnets if s),
        )


def load_conf_dir(conf_dir: Path) -> tuple[list[NetworkConf], list[str]]:
    """Every network in `conf_dir`, in the order a runtime reads them, and the files skipped."""
    confs, problems = [], []
    files = sorted(conf_dir.iterdir()) if conf_dir.is_dir() else []
    for path in files:
        if path.suffix not in CONF_SUFFIXES or not path.is_file():
            continue
        try:
            confs.append(NetworkConf.of(parse_network_list(path.read_bytes()), path))
        except (OSError, ConflistError) as exc:
            problems.append(f"{path}: {exc}")
    return confs, problems


def find_network(conf_dir: Path, name: str) -> NetworkConf:
    """The network called `name` in `conf_dir`, or the conflist file `name`."""
    as_path = Path(name)
    if ("/" in name or as_path.suffix in CONF_SUFFIXES) and as_path.is_file():
        return NetworkConf.of(parse_network_list(as_path.read_bytes()), as_path)
    confs, problems = load_conf_dir(conf_dir)
    for conf in confs:
        if conf.net.name == name:
            return conf
    known = ", ".join(c.net.name for c in confs) or "none"
    hint = f" (unreadable: {'; '.join(problems)})" if problems else ""
    raise ConflistError(f"no network named {name!r} in {conf_dir} (found: {known}){hint}; "
                        "pass --conf-dir DIR or the path of a conflist file")
