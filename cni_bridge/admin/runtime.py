"""Running a network configuration list as libcni (and so every container runtime) does:
``name``, ``cniVersion`` and the declared-and-supplied ``runtimeConfig`` injected, ADD chaining
``prevResult``, the result cached in libcni's ``cniCacheV1`` format and given to CHECK and DEL
(in reverse), GC with ``cni.dev/valid-attachments``, a failed ADD undone by a DEL of the list.
Plugins get the caller's environment plus the ``CNI_*`` variables, in ``netns`` when given.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cni_bridge.cni.env import valid_name, validate_ifname
from cni_bridge.cni.errors import EnvError
from cni_bridge.cni.versions import at_least
from cni_bridge.deploy.confdir import ConflistError, NetworkList
from cni_bridge.deploy.defaults import DEFAULT_CACHE_DIR

CACHE_KIND = "cniCacheV1"
PLUGIN_TIMEOUT = 60.0
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")


class PluginError(Exception):
    """A plugin failed; fields come from its error JSON (code 0 when it printed none)."""

    def __init__(self, plugin: str, code: int, msg: str, details: str = "", stderr: str = ""):
        super().__init__(f"plugin {plugin} failed: [{code}] {msg}"
                         + (f" ({details})" if details else ""))
        self.plugin, self.code, self.msg, self.details, self.stderr = (
            plugin, code, msg, details, stderr)


@dataclass(frozen=True)
class Attachment:
    """One container's attachment to a network (libcni's RuntimeConf)."""

    container_id: str
    ifname: str = "eth0"
    netns: str = ""
    args: str = ""  # CNI_ARGS, "K1=V1;K2=V2"
    capability_args: Mapping[str, Any] = field(default_factory=dict)


def validate_attachment(net: NetworkList, att: Attachment) -> None:
    """libcni's checks before ADD (container ID, interface name)."""
    if not valid_name(att.container_id):
        raise ConflistError(f"invalid container ID {att.container_id!r}: use letters, digits, "
                            "'_', '.', '-' and start with a letter or digit")
    try:
        validate_ifname(att.ifname)
    except EnvError:
        raise ConflistError(f"invalid interface name {att.ifname!r}: 1-15 characters, "
                            "no '/', ':' or spaces") from None


def plugin_config(net: NetworkList, plugin: Mapping[str, Any], prev: Mapping[str, Any] | None,
                  capability_args: Mapping[str, Any]) -> dict[str, Any]:
    """libcni's buildOneConfig: inject name, cniVersion, prevResult and runtimeConfig."""
    config = {**plugin, "name": net.name, "cniVersion": net.cni_version}
    if prev is not None:
        config["prevResult"] = prev
    declared = plugin.get("capabilities") or {}
    runtime_config = {cap: capability_args[cap] for cap, on in declared.items()
                      if on and cap in capability_args}
    if runtime_config:
        config["runtimeConfig"] = runtime_config
    return config


class Runtime:
    def __init__(self, plugin_dirs: Sequence[str | os.PathLike[str]],
                 cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR, *,
                 netns: str | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = PLUGIN_TIMEOUT) -> None:
        self.plugin_dirs = [str(d) for d in plugin_dirs]
        self.cache_dir = Path(cache_dir)
        self.netns = netns  # a name under /run/netns: plugins run there
        self.extra_env = dict(env or {})
        self.timeout = timeout

    def add(self, net: NetworkList, att: Attachment) -> dict[str, Any]:
        validate_attachment(net, att)
        result: dict[str, Any] | None = None
        for plugin in net.plugins:
            config = plugin_config(net, plugin, result, att.capability_args)
            try:
                result = self._parse_result(config, self._exec("ADD", config, att))
            except (PluginError, ConflistError) as exc:
                self._undo_add(net, att, exc)
                raise
        assert result is not None
        self._cache_write(net, att, result)
        return result

    def check(self, net: NetworkList, att: Attachment) -> None:
        if not at_least(net.cni_version, "0.4.0"):
            raise ConflistError(f"network {net.name}: cniVersion {net.cni_version} has no CHECK")
        if net.disable_check:
            return
        cached, att = self.cached_result(net.name, att), self._with_cached_args(net, att)
        if cached is None:
            raise ConflistError(f"no cached ADD result for {att.container_id}/{att.ifname} on "
                                f"{net.name} in {self.cache_dir}; ADD it first, or pass the "
                                "cache dir used at ADD")
        for plugin in net.plugins:
            self._exec("CHECK", plugin_config(net, plugin, cached, att.capability_args), att)

    def delete(self, net: NetworkList, att: Attachment) -> None:
        cached = self.cached_result(net.name, att) if at_least(net.cni_version, "0.4.0") else None
        att = self._with_cached_args(net, att)
        for plugin in reversed(net.plugins):
            self._exec("DEL", plugin_config(net, plugin, cached, att.capability_args), att)
        self.cache_path(net.name, att).unlink(missing_ok=True)

    def gc(self, net: NetworkList, valid: Sequence[tuple[str, str]]) -> list[Exception]:
        """Remove what is not in `valid` [(container ID, ifname)]; returns the errors."""
        if net.disable_gc:
            return []
        errors: list[Exception] = []
        keep = set(valid)
        for att in self.cached_attachments(net.name):
            if (att.container_id, att.ifname) not in keep:
                try:
                    self.delete(net, att)
                except (PluginError, ConflistError) as exc:
                    errors.append(exc)
        if at_least(net.cni_version, "1.1.0"):
            listed = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
            inject = {"name": net.name, "cniVersion": net.cni_version,
                      "cni.dev/valid-attachments": listed, "cni.dev/attachments": listed}
            for plugin in net.plugins:
                try:
                    self._exec("GC", {**plugin, **inject}, None)
                except (PluginError, ConflistError) as exc:
                    errors.append(exc)
        return errors

    def status(self, net: NetworkList) -> None:
        """Raises the first plugin's error; a list older than 1.1.0 has no STATUS (passes)."""
        for plugin in net.plugins if at_least(net.cni_version, "1.1.0") else ():
            self._exec("STATUS", {**plugin, "name": net.name, "cniVersion": net.cni_version},
                       None)

    def cache_path(self, network: str, att: Attachment) -> Path:
        return self.cache_dir / "results" / f"{network}-{att.container_id}-{att.ifname}"

    def cached_result(self, network: str, att: Attachment) -> dict[str, Any] | None:
        entry = _read_entry(self.cache_path(network, att))
        return entry.get("result") if entry else None

    def cached_attachments(self, network: str) -> list[Attachment]:
        directory = self.cache_dir / "results"
        entries = map(_read_entry, sorted(directory.iterdir()) if directory.is_dir() else [])
        return [Attachment(e["containerId"], e["ifName"], e.get("netns", ""),
                           ";".join("=".join(p) for p in e.get("cniArgs") or []),
                           e.get("capabilityArgs") or {})
                for e in entries if e and e.get("ifName") and e.get("networkName") == network]

    def _with_cached_args(self, net: NetworkList, att: Attachment) -> Attachment:
        """Without capability args from the caller, those of ADD (libcni passes the caller's
        only; a `del` without the ADD's --port would leave the port mappings behind)."""
        entry = None if att.capability_args else _read_entry(self.cache_path(net.name, att))
        cached = (entry or {}).get("capabilityArgs")
        return replace(att, capability_args=cached) if isinstance(cached, dict) else att

    def _cache_write(self, net: NetworkList, att: Attachment, result: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"kind": CACHE_KIND, "containerId": att.container_id,
                                 "config": base64.b64encode(net.raw).decode(),
                                 "ifName": att.ifname, "networkName": net.name}
        optional = {"netns": att.netns,
                    "cniArgs": [p.split("=", 1) for p in att.args.split(";") if p],
                    "capabilityArgs": dict(att.capability_args), "result": result}
        entry.update({k: v for k, v in optional.items() if v})  # Go's omitempty
        path = self.cache_path(net.name, att)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def find_plugin(self, kind: str) -> str:
        for directory in self.plugin_dirs:
            candidate = os.path.join(directory, kind)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise ConflistError(f"plugin {kind!r} not found in {':'.join(self.plugin_dirs)}; "
                            "install it there (cni-bridge install) or pass --plugin-dir")

    def environment(self, command: str, att: Attachment | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CNI_VARS}
        env.setdefault("PATH", SBIN_PATH)
        env.update(self.extra_env)
        values = (att.container_id, att.netns, att.ifname, att.args) if att else ("",) * 4
        env.update(zip(CNI_VARS[1:5], values, strict=True))
        env.update(CNI_COMMAND=command, CNI_PATH=os.pathsep.join(self.plugin_dirs))
        return env

    def _exec(self, command: str, config: dict[str, Any], att: Attachment | None) -> str:
        kind = config["type"]
        argv = [*(["ip", "netns", "exec", self.netns] if self.netns else []),
                self.find_plugin(kind)]
        try:
            proc = subprocess.run(argv, input=json.dumps(config).encode(), capture_output=True,
                                  env=self.environment(command, att), timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise PluginError(kind, 0, f"{command} timed out after {self.timeout:g}s") from None
        stdout, stderr = (proc.stdout.decode(errors="replace"),
                          proc.stderr.decode(errors="replace"))
        if proc.returncode != 0:
            raise _plugin_error(kind, stdout, stderr)
        return stdout

    def _parse_result(self, config: dict[str, Any], stdout: str) -> dict[str, Any]:
        with contextlib.suppress(ValueError):
            if isinstance(result := json.loads(stdout), dict):
                result.setdefault("cniVersion", config["cniVersion"])  # as libcni (cni#895)
                return result
        raise ConflistError(f"plugin {config['type']}: ADD printed no JSON object: {stdout!r}")

    def _undo_add(self, net: NetworkList, att: Attachment, failure: Exception) -> None:
        """DEL the list in reverse; a plugin that cannot be found cannot have left anything."""
        for plugin in reversed(net.plugins):
            try:
                self.find_plugin(plugin["type"])
            except ConflistError:
                continue
            try:
                self._exec("DEL", plugin_config(net, plugin, None, att.capability_args), att)
            except (PluginError, ConflistError) as exc:
                failure.add_note(f"undoing the failed ADD: {exc}")


def _plugin_error(kind: str, stdout: str, stderr: str) -> PluginError:
    with contextlib.suppress(ValueError):
        if isinstance(doc := json.loads(stdout), dict) and isinstance(doc.get("code"), int):
            return PluginError(kind, doc["code"], str(doc.get("msg", "")),
                               str(doc.get("details", "")), stderr)
    msg = f"failed: {stderr.strip()}" if stderr.strip() else "failed with no error message"
    return PluginError(kind, 0, f"netplugin {msg}", "", stderr)


def _read_entry(path: Path) -> dict[str, Any] | None:
    """A cache entry, or None for an unreadable or foreign file (libcni ignores those)."""
    try:
        entry = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("kind") == CACHE_KIND else None
