"""The bridge's one door to IPAM: ``ipam_for(req)`` runs host-local in-process (told the
bridge's own CNI_ARGS keys, e.g. ``MAC=``, so its strict parsing passes) or executes another
``ipam.type`` from ``CNI_PATH`` as the spec says: same environment but ``CNI_COMMAND``, same
stdin, stderr passed through; its error result keeps code, message and details.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cni_bridge.cni.dispatch import Plugin
from cni_bridge.cni.errors import INTERNAL, PLUGIN_NOT_AVAILABLE, CniError, ConfigError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPInterface, Result, parse_result
from cni_bridge.ipam.host_local.plugin import HostLocalPlugin

HOST_LOCAL = "host-local"


class Ipam(Plugin, Protocol):
    def addresses_held(self, req: Request) -> tuple[IPInterface, ...]: ...


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes


# argv, stdin bytes, environment -> exit code and stdout (stderr goes to ours).
Runner = Callable[[Sequence[str], bytes, Mapping[str, str]], Completed]


def run_executable(argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> Completed:
    import subprocess  # only a delegated IPAM plugin needs it: not imported on every call

    proc = subprocess.run(list(argv), input=stdin, env=dict(env), stdout=subprocess.PIPE,
                          stderr=None, check=False)
    return Completed(proc.returncode, proc.stdout)


def ipam_type(config: Mapping[str, Any]) -> str:
    ipam = config.get("ipam")
    kind = ipam.get("type") if isinstance(ipam, Mapping) else None
    if not isinstance(kind, str) or not kind:
        raise ConfigError("IPAM config missing 'ipam.type'", "set ipam.type, e.g. host-local")
    if "/" in kind or kind in (".", ".."):
        raise ConfigError("invalid ipam.type", f'"{kind}" must be a plugin name, not a path')
    return kind


def ipam_for(req: Request, extra_arg_keys: frozenset[str] = frozenset(),
             runner: Runner = run_executable) -> Ipam:
    kind = ipam_type(req.config)
    if kind == HOST_LOCAL:
        return HostLocalPlugin(extra_arg_keys=extra_arg_keys)
    return DelegatedIpam(kind, runner)


class DelegatedIpam:
    """An IPAM plugin run as a separate executable found in CNI_PATH."""

    def __init__(self, kind: str, runner: Runner = run_executable) -> None:
        self.kind = kind
        self.runner = runner

    def add(self, req: Request) -> Result:
        with req.timer.phase("ipam"):
            out = self._exec(req, "ADD")
        try:
            doc = json.loads(out)
        except ValueError as exc:
            raise CniError(f"IPAM plugin {self.kind} printed an invalid ADD result: {exc}",
                           _excerpt(out)) from None
        if not isinstance(doc, dict):
            raise CniError(f"IPAM plugin {self.kind} printed an invalid ADD result",
                           _excerpt(out))
        try:
            return parse_result(doc, req.cni_version)
        except CniError as exc:
            raise CniError(f"IPAM plugin {self.kind} returned an invalid result: {exc.msg}",
                           exc.details) from None

    def delete(self, req: Request) -> None:
        with req.timer.phase("ipam"):
            self._exec(req, "DEL")

    def check(self, req: Request) -> None:
        self._exec(req, "CHECK")

    def gc(self, req: Request) -> None:
        self._exec(req, "GC")

    def status(self, req: Request) -> None:
        try:
            self.find(req.env.path)
        except CniError as exc:
            raise CniError(exc.msg, exc.details, code=PLUGIN_NOT_AVAILABLE) from None
        self._exec(req, "STATUS")

    def addresses_held(self, req: Request) -> tuple[IPInterface, ...]:
        """A foreign IPAM keeps no record we can read; fall back to prevResult's addresses."""
        prev = req.prev_result
        return tuple(ip.address for ip in prev.ips) if prev else ()

    def find(self, path: Sequence[str]) -> str:
        for directory in path:
            candidate = os.path.join(directory, self.kind)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise CniError(f'failed to find plugin "{self.kind}" in path {list(path)}',
                       "install it or fix CNI_PATH")

    def _exec(self, req: Request, command: str) -> bytes:
        executable = self.find(req.env.path)
        env = dict(req.env.environ)
        env["CNI_COMMAND"] = command
        try:
            done = self.runner([executable], req.stdin, env)
        except OSError as exc:
            raise CniError(f"cannot execute IPAM plugin {executable}: {exc.strerror}") from None
        if done.returncode != 0:
            raise _error_from(self.kind, command, done)
        return done.stdout


def _error_from(kind: str, command: str, done: Completed) -> CniError:
    """The plugin's own error object when it printed one; otherwise what libcni would say."""
    if not done.stdout.strip():
        return CniError(f"netplugin {kind} failed with no error message",
                        f"{command} exited with status {done.returncode}")
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("msg"), str):
        code = doc.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL
        details = doc.get("details")
        return CniError(doc["msg"], details if isinstance(details, str) else "", code=code)
    return CniError(f"netplugin {kind} failed: {_excerpt(done.stdout)}",
                    f"{command} exited with status {done.returncode}")


def _excerpt(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= 300 else text[:297] + "..."
