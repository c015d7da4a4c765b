#!/usr/bin/env python3
"""A mini CNI runtime for conflists: what libcni (containernetworking/cni v1.2+) does, stdlib only.

    python tests/conflist_runner.py add|check|del|gc|status --conflist FILE --cache DIR
        --plugin-dir DIR[:DIR] [--netns PATH] [--id ID] [--ifname IF] [--cap JSON]
        [--args CNI_ARGS] [--host-ns NAME] [--valid ID/IF ...]

ADD prints the final result JSON. A plugin error is printed as JSON
({code, msg, details, plugin}) with exit 1; a runtime-side error goes to stderr with exit 2.
Without --host-ns the plugins run in the caller's namespace (wrap the call in `ip netns exec`).

Behaviour, as libcni:
- each plugin gets `name` and `cniVersion` injected; `runtimeConfig` holds only the capabilities
  the plugin declares true AND the caller supplied (omitted when empty); `capabilities` stays;
- ADD chains `prevResult`, validates container ID / network name / ifname first, and caches the
  final result as `<cache>/results/<net>-<cid>-<ifname>` (kind cniCacheV1, config base64);
- CHECK (version >= 0.4.0, else refused; skipped under `disableCheck`) and DEL get the cached
  result as `prevResult` (DEL only for version >= 0.4.0); DEL runs in reverse order, stops at the
  first error, and removes the cache entry only when a cached result was used;
- GC (skipped under `disableGC`) synthesizes a DEL, with the cached netns, CNI_ARGS and capability
  args, for each cached attachment of the network not in the valid list, then (version >= 1.1.0)
  sends GC to every plugin with `cni.dev/valid-attachments` and `cni.dev/attachments`; errors are
  collected and raised together as an ExceptionGroup;
- STATUS (version >= 1.1.0, else a no-op) runs in plugin order and stops at the first error.

Deliberate differences from libcni:
- when an ADD fails, the whole list is DELeted (reverse order, no prevResult, errors ignored) as
  the runtimes built on libcni (CRI-O, containerd, podman) do; pass cleanup_on_add_failure=False
  for libcni's bare behaviour;
- GC with no cache directory still sends GC to the plugins (libcni silently does nothing);
- cached results are passed on as stored, without conversion to the list's version;
- plugins get a clean environment (PATH and the six CNI_* variables), not the runtime's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CACHE_KIND = "cniCacheV1"
PLUGIN_TIMEOUT = 30.0
STATE_ENV = "CNI_BRIDGE_STATE_DIR"
SOCKET_ENV = "CNI_BRIDGE_SOCKET"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIBCNI_VERSION = (1, 1, 0)  # the highest spec version this runtime speaks
VALID_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class NetnsLike(Protocol):
    """What the runtime needs of a namespace (tests.netns.Netns fits)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> str: ...


class ConflistError(Exception):
    """A runtime-side failure (bad conflist, plugin not found, refused verb)."""


class PluginError(Exception):
    """A plugin exited non-zero; fields come from its error JSON (code 0 when it had none)."""

    def __init__(self, code: int, msg: str, details: str, plugin: str, stderr: str = "") -> None:
        super().__init__(f"plugin {plugin}: [{code}] {msg}" + (f": {details}" if details else ""))
        self.code, self.msg, self.details = code, msg, details
        self.plugin, self.stderr = plugin, stderr

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg, "details": self.details, "plugin": self.plugin}


@dataclass(frozen=True)
class ConfList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    disable_check: bool
    disable_gc: bool
    raw: bytes  # the list as given: cached base64-encoded, like libcni


@dataclass(frozen=True)
class RuntimeConf:
    """One attachment: libcni's RuntimeConf."""

    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    args: str = ""  # CNI_ARGS, "K1=V1;K2=V2"
    capability_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Invocation:
    """One plugin execution, kept for assertions and diagnostics."""

    command: str
    plugin: str
    config: dict[str, Any]
    env: dict[str, str]
    rc: int
    stdout: str
    stderr: str


def version_tuple(version: str) -> tuple[int, ...]:
    if not version:
        return (0, 1, 0)  # a missing cniVersion means 0.1.0
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise ConflistError(f"invalid cniVersion {version!r}") from None


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "t", "f"):
        return value.lower() in ("true", "1", "t")
    raise ConflistError(f"invalid {key} value {value!r}")


def _pick_version(doc: Mapping[str, Any]) -> str:
    """`cniVersions` entries above what we speak are dropped; the highest of the rest wins."""
    version = doc.get("cniVersion", "")
    candidates = [v for v in doc.get("cniVersions", []) if version_tuple(v) <= LIBCNI_VERSION]
    if version:
        candidates.append(version)
    return max(candidates, key=version_tuple, default="")


def parse_conflist(data: bytes | str | Mapping[str, Any]) -> ConfList:
    if isinstance(data, Mapping):
        raw, doc = json.dumps(data).encode(), dict(data)
    else:
        raw = data.encode() if isinstance(data, str) else data
        doc = json.loads(raw)
    if not doc.get("name"):
        raise ConflistError("conflist has no name")
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConflistError(f"conflist {doc['name']!r} has no plugins")
    if any(not isinstance(p, dict) or not p.get("type") for p in plugins):
        raise ConflistError(f"conflist {doc['name']!r}: every plugin needs a type")
    return ConfList(
        name=doc["name"],
        cni_version=_pick_version(doc),
        plugins=plugins,
        disable_check=_as_bool(doc.get("disableCheck", False), "disableCheck"),
        disable_gc=_as_bool(doc.get("disableGC", False), "disableGC"),
        raw=raw,
    )


def parse_cni_args(args: str) -> list[list[str]]:
    return [pair.split("=", 1) for pair in args.split(";") if pair] if args else []


def build_config(
    conflist: ConfList,
    plugin: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
    capability_args: Mapping[str, Any],
) -> dict[str, Any]:
    """libcni's buildOneConfig: inject name/cniVersion/prevResult, then filtered runtimeConfig."""
    config = {**plugin, "name": conflist.name, "cniVersion": conflist.cni_version}
    if prev_result is not None:
        config["prevResult"] = prev_result
    declared = plugin.get("capabilities") or {}
    runtime_config = {
        cap: capability_args[cap] for cap, on in declared.items() if on and cap in capability_args
    }
    if runtime_config:
        config["runtimeConfig"] = runtime_config
    return config


def validate_attachment(conflist: ConfList, rt: RuntimeConf) -> None:
    """libcni's checks before ADD (pkg/utils)."""
    if not VALID_ID.match(rt.container_id):
        raise ConflistError(f"invalid container ID {rt.container_id!r}")
    if not VALID_ID.match(conflist.name):
        raise ConflistError(f"invalid network name {conflist.name!r}")
    bad_ifname = (
        not rt.ifname
        or len(rt.ifname.encode()) > 15
        or rt.ifname in (".", "..")
        or any(c in rt.ifname for c in "/:")
        or any(c.isspace() for c in rt.ifname)
    )
    if bad_ifname:
        raise ConflistError(f"invalid interface name {rt.ifname!r}")


class Runtime:
    """Runs conflists the way libcni does; plugins execute inside `ns` when given."""

    def __init__(
        self,
        plugin_dirs: Sequence[str],
        cache_dir: str,
        ns: NetnsLike | None = None,
        cleanup_on_add_failure: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.plugin_dirs = [str(d) for d in plugin_dirs]
        self.cache_dir = Path(cache_dir)
        self.ns = ns
        self.cleanup_on_add_failure = cleanup_on_add_failure
        self.extra_env = dict(extra_env or {})  # e.g. another PATH for the plugins
        self.calls: list[Invocation] = []

    # --- verbs -----------------------------------------------------------------------------

    def add(self, conflist: ConfList, rt: RuntimeConf) -> dict[str, Any]:
        validate_attachment(conflist, rt)
        result: dict[str, Any] | None = None
        for plugin in conflist.plugins:
            config = build_config(conflist, plugin, result, rt.capability_args)
            try:
                result = self._add_one(config, rt)
            except (PluginError, ConflistError) as exc:
                if self.cleanup_on_add_failure:
                    self._cleanup_after_failed_add(conflist, rt, exc)
                raise
        assert result is not None
        self._cache_write(conflist, rt, result)
        return result

    def check(self, conflist: ConfList, rt: RuntimeConf) -> None:
        if version_tuple(conflist.cni_version) < (0, 4, 0):
            raise ConflistError(
                f"configuration version {conflist.cni_version!r} does not support the CHECK command"
            )
        if conflist.disable_check:
            return
        cached = self.cached_result(conflist.name, rt)
        for plugin in conflist.plugins:
            config = build_config(conflist, plugin, cached, rt.capability_args)
            self._exec("CHECK", config, self._env("CHECK", rt))

    def delete(self, conflist: ConfList, rt: RuntimeConf) -> None:
        cached = None
        if version_tuple(conflist.cni_version) >= (0, 4, 0):
            cached = self.cached_result(conflist.name, rt)
        for plugin in reversed(conflist.plugins):
            config = build_config(conflist, plugin, cached, rt.capability_args)
            self._exec("DEL", config, self._env("DEL", rt))
        if cached is not None:
            self._cache_path(conflist.name, rt).unlink(missing_ok=True)

    def gc(self, conflist: ConfList, valid: Sequence[tuple[str, str]] | None) -> None:
        """`valid` is [(container ID, ifname)]; None sends no attachment keys at all."""
        if conflist.disable_gc:
            return
        errors: list[Exception] = []
        keep = set(valid or [])
        for entry in self.cached_attachments(conflist.name):
            if (entry["containerId"], entry["ifName"]) in keep:
                continue
            rt = RuntimeConf(
                container_id=entry["containerId"],
                netns=entry.get("netns", ""),
                ifname=entry["ifName"],
                args=";".join("=".join(pair) for pair in entry.get("cniArgs") or []),
                capability_args=entry.get("capabilityArgs") or {},
            )
            try:
                self.delete(conflist, rt)
            except (PluginError, ConflistError) as exc:
                errors.append(exc)
        if version_tuple(conflist.cni_version) >= (1, 1, 0):
            errors += self._gc_plugins(conflist, valid)
        if errors:
            raise ExceptionGroup(f"GC of network {conflist.name!r} failed", errors)

    def status(self, conflist: ConfList) -> None:
        if version_tuple(conflist.cni_version) < (1, 1, 0):
            return
        for plugin in conflist.plugins:
            config = {**plugin, "name": conflist.name, "cniVersion": conflist.cni_version}
            self._exec("STATUS", config, self._env("STATUS", None))

    # --- cache -----------------------------------------------------------------------------

    def _cache_path(self, network: str, rt: RuntimeConf) -> Path:
        return self.cache_dir / "results" / f"{network}-{rt.container_id}-{rt.ifname}"

    def cache_entry(self, network: str, rt: RuntimeConf) -> dict[str, Any] | None:
        path = self._cache_path(network, rt)
        try:
            entry: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None  # libcni ignores unreadable cache files
        return entry if entry.get("kind") == CACHE_KIND else None

    def cached_result(self, network: str, rt: RuntimeConf) -> dict[str, Any] | None:
        entry = self.cache_entry(network, rt)
        return entry.get("result") if entry else None

    def cached_attachments(self, network: str) -> list[dict[str, Any]]:
        directory = self.cache_dir / "results"
        found = []
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                entry = json.loads(path.read_bytes())
                usable = entry.get("kind") == CACHE_KIND and entry.get("ifName")
                if usable and entry.get("networkName") == network:
                    found.append(entry)
        return found

    def _cache_write(self, conflist: ConfList, rt: RuntimeConf, result: dict[str, Any]) -> None:
        entry: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "config": base64.b64encode(conflist.raw).decode(),
            "ifName": rt.ifname,
            "networkName": conflist.name,
        }
        # The optional fields are omitted when empty (Go's omitempty).
        optional = {
            "netns": rt.netns,
            "cniArgs": parse_cni_args(rt.args),
            "capabilityArgs": dict(rt.capability_args),
            "result": result,
        }
        entry.update({k: v for k, v in optional.items() if v})
        path = self._cache_path(conflist.name, rt)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(json.dumps(entry))
        path.chmod(0o600)

    # --- execution -------------------------------------------------------------------------

    def _add_one(self, config: dict[str, Any], rt: RuntimeConf) -> dict[str, Any]:
        stdout = self._exec("ADD", config, self._env("ADD", rt))
        try:
            result = json.loads(stdout)
        except ValueError as exc:
            raise ConflistError(f"plugin {config['type']}: ADD result is not JSON: {exc}") from None
        if not isinstance(result, dict):
            raise ConflistError(f"plugin {config['type']}: ADD result is not an object")
        # A result without a version is taken to be in the config's version (cni issue 895).
        result.setdefault("cniVersion", config["cniVersion"])
        return result

    def _cleanup_after_failed_add(
        self, conflist: ConfList, rt: RuntimeConf, failure: Exception
    ) -> None:
        for plugin in reversed(conflist.plugins):
            config = build_config(conflist, plugin, None, rt.capability_args)
            try:
                self._exec("DEL", config, self._env("DEL", rt))
            except (PluginError, ConflistError) as exc:
                failure.add_note(f"cleanup DEL after the failed ADD also failed: {exc}")

    def _gc_plugins(
        self, conflist: ConfList, valid: Sequence[tuple[str, str]] | None
    ) -> list[Exception]:
        inject: dict[str, Any] = {"name": conflist.name, "cniVersion": conflist.cni_version}
        if valid is not None:
            attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
            inject["cni.dev/valid-attachments"] = attachments
            inject["cni.dev/attachments"] = attachments  # the pre-rename key; libcni sends both
        errors: list[Exception] = []
        for plugin in conflist.plugins:
            try:
                self._exec("GC", {**plugin, **inject}, self._env("GC", None))
            except (PluginError, ConflistError) as exc:
                errors.append(exc)
        return errors

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        """All six variables are always set, possibly empty (libcni's invoke.Args.AsEnv)."""
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id if rt else "",
            "CNI_NETNS": rt.netns if rt else "",
            "CNI_ARGS": rt.args if rt else "",
            "CNI_IFNAME": rt.ifname if rt else "",
            "CNI_PATH": ":".join(self.plugin_dirs),
            # Not CNI variables: where the plugins keep their records (tests use a temp dir),
            # and which resident server they hand calls to (a test's private one).
            **{k: os.environ[k] for k in (STATE_ENV, SOCKET_ENV) if k in os.environ},
            **self.extra_env,
        }

    def find_plugin(self, plugin_type: str) -> str:
        if os.sep in plugin_type:
            raise ConflistError(f"plugin type {plugin_type!r} contains a path separator")
        for directory in self.plugin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise ConflistError(f"failed to find plugin {plugin_type!r} in path {self.plugin_dirs}")

    def _exec(self, command: str, config: dict[str, Any], env: dict[str, str]) -> str:
        """Run one plugin; returns stdout, raises PluginError on a non-zero exit."""
        executable = self.find_plugin(config["type"])
        argv = ["env", "-i", f"PATH={PATH}", *(f"{k}={v}" for k, v in env.items()), executable]
        if self.ns is not None:
            _refuse_own_namespace(self.ns.path)
            argv = ["ip", "netns", "exec", self.ns.name, *argv]
        proc = subprocess.run(
            argv,
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=PLUGIN_TIMEOUT,
            check=False,
        )
        self.calls.append(
            Invocation(
                command, config["type"], config, env, proc.returncode, proc.stdout, proc.stderr
            )
        )
        if proc.returncode != 0:
            raise _plugin_error(config["type"], proc.stdout, proc.stderr)
        return proc.stdout


def _refuse_own_namespace(path: str) -> None:
    """Guard rail: never run plugins in the machine's (or this process's) own namespace."""
    target = os.stat(path)
    for own in ("/proc/1/ns/net", "/proc/self/ns/net"):
        with contextlib.suppress(OSError):
            st = os.stat(own)
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                raise ConflistError(f"{path} is the machine's own network namespace; refusing")


def _plugin_error(plugin: str, stdout: str, stderr: str) -> PluginError:
    """Decode a plugin's error output the way libcni's invoke package does."""
    if not stdout.strip():
        msg = (
            f"netplugin failed: {stderr!r}" if stderr else "netplugin failed with no error message"
        )
        return PluginError(0, msg, "", plugin, stderr)
    try:
        doc = json.loads(stdout)
        return PluginError(
            int(doc.get("code", 0)),
            str(doc.get("msg", "")),
            str(doc.get("details", "")),
            plugin,
            stderr,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        msg = f"netplugin failed but error parsing its diagnostic message {stdout!r}: {exc}"
        return PluginError(0, msg, "", plugin, stderr)


# --- command line ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _NamedNs:
    """Just enough of tests.netns.Netns for the CLI (which must run without the test package)."""

    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mini CNI runtime for conflists")
    parser.add_argument("command", choices=["add", "check", "del", "gc", "status"])
    parser.add_argument("--conflist", required=True)
    parser.add_argument("--netns", default="")
    parser.add_argument("--id", default="")
    parser.add_argument("--ifname", default="eth0")
    parser.add_argument("--cap", default="{}", help="capability args as a JSON object")
    parser.add_argument("--args", default="", help="CNI_ARGS")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--plugin-dir", required=True, help="DIR[:DIR...]")
    parser.add_argument("--host-ns", help="run the plugins in /run/netns/NAME")
    parser.add_argument("--valid", nargs="*", help="GC: valid attachments as ID/IFNAME")
    return parser.parse_args(argv)


def _run_cli(opts: argparse.Namespace) -> dict[str, Any] | None:
    ns = _NamedNs(opts.host_ns) if opts.host_ns else None
    runtime = Runtime(opts.plugin_dir.split(":"), opts.cache, ns)
    conflist = parse_conflist(Path(opts.conflist).read_bytes())
    rt = RuntimeConf(opts.id, opts.netns, opts.ifname, opts.args, json.loads(opts.cap))
    if opts.command == "add":
        return runtime.add(conflist, rt)
    if opts.command == "check":
        runtime.check(conflist, rt)
    elif opts.command == "del":
        runtime.delete(conflist, rt)
    elif opts.command == "gc":
        runtime.gc(conflist, None if opts.valid is None else [_attachment(v) for v in opts.valid])
    else:
        runtime.status(conflist)
    return None


def _attachment(text: str) -> tuple[str, str]:
    container_id, sep, ifname = text.partition("/")
    if not sep:
        raise ValueError(f"--valid wants ID/IFNAME, got {text!r}")
    return container_id, ifname


def main(argv: Sequence[str] | None = None) -> int:
    opts = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = _run_cli(opts)
    except PluginError as exc:
        print(json.dumps(exc.as_json(), indent=4))
        return 1
    except ExceptionGroup as group:
        print(json.dumps([_describe(e) for e in group.exceptions], indent=4))
        return 1
    except (ConflistError, OSError, ValueError) as exc:
        print(f"conflist_runner: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=4))
    return 0


def _describe(exc: BaseException) -> dict[str, Any]:
    return exc.as_json() if isinstance(exc, PluginError) else {"msg": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
