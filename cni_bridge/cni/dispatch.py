"""The shared dispatcher: env + stdin in, one JSON document and an exit code out.

Checks in the reference skel's order (libcni v1.3), so the same bad input gets the same code:
env of the verb (4), missing env (4), VERSION, stdin (6), network name (7), unknown verb (4),
verb/version gates (1/6), supported version (1), plugin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cni_bridge import MAX_STDIN
from cni_bridge.cni.env import VERBS, CniEnv, read_env, validate_network_name
from cni_bridge.cni.errors import (
    INTERNAL,
    IO_FAILURE,
    CniError,
    ConfigError,
    DecodeError,
    EnvError,
)
from cni_bridge.cni.request import VALID_ATTACHMENTS_KEYS, PhaseTimer, Request
from cni_bridge.cni.result import Result, parse_result, render_result
from cni_bridge.cni.supported import version_answer
from cni_bridge.cni.versions import (
    DEFAULT_CONFIG_VERSION,
    SUPPORTED_VERSIONS,
    ensure_supported,
    ensure_verb_allowed,
)
from cni_bridge.diag import logger

log = logger(__name__)

VERB_METHODS = {"DEL": "delete", "CHECK": "check", "GC": "gc", "STATUS": "status"}


class Plugin(Protocol):
    def add(self, req: Request) -> Result: ...
    def delete(self, req: Request) -> None: ...
    def check(self, req: Request) -> None: ...
    def gc(self, req: Request) -> None: ...
    def status(self, req: Request) -> None: ...


@dataclass
class Outcome:
    """What one call printed and how it ended; also what the operator log records."""

    command: str
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    error: CniError | None = None
    request: Request | None = None
    env: CniEnv | None = None
    timer: PhaseTimer = field(default_factory=PhaseTimer)


def version_json() -> str:
    return version_answer().decode()


def about_text(role: str, program_version: str) -> str:
    return (
        f"CNI {role} plugin (cni-bridge) v{program_version}\n"
        f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON value {name}")  # NaN/Infinity: Python extensions, not JSON


def decode_config(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_STDIN:
        raise CniError(f"network config on stdin is larger than {MAX_STDIN} bytes", code=IO_FAILURE)
    try:
        config = json.loads(stdin, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"error unmarshall network config: {exc}") from None
    if config is None:
        config = {}  # Go decodes `null` into an empty struct: the name is then missing (7)
    if not isinstance(config, dict):
        raise DecodeError("error unmarshall network config: the config must be a JSON object")
    return config


def config_version(config: Mapping[str, Any]) -> str:
    version = config.get("cniVersion")
    if version is not None and not isinstance(version, str):
        raise DecodeError("decoding version from network config: cniVersion must be a string")
    return version or DEFAULT_CONFIG_VERSION


def build_request(env: CniEnv, stdin: bytes, timer: PhaseTimer) -> Request:
    config = decode_config(stdin)
    name = validate_network_name(config.get("name"))
    if env.command not in VERBS:
        raise EnvError(f"unknown CNI_COMMAND: {env.command}")
    version = config_version(config)
    ensure_verb_allowed(env.command, version)
    ensure_supported(version)
    prev = config.get("prevResult")
    prev_result = None
    if prev is not None:
        try:
            prev_result = parse_result(prev, version)
        except CniError as exc:
            raise DecodeError(f"could not parse prevResult: {exc.msg}", exc.details) from None
    if env.command == "GC" and not any(
        isinstance(config.get(k), list) for k in VALID_ATTACHMENTS_KEYS
    ):
        raise ConfigError("GC needs the list of valid attachments", "cni.dev/valid-attachments")
    return Request(env, stdin, config, version, name, prev_result, timer)


def call_plugin(plugin: Plugin, req: Request) -> str:
    if req.env.command == "ADD":
        return render_result(plugin.add(req), req.cni_version)
    getattr(plugin, VERB_METHODS[req.env.command])(req)
    return ""


def dispatch(role: str, program_version: str, environ: Mapping[str, str],
             read_stdin: Callable[[], bytes], make_plugin: Callable[[], Plugin]) -> Outcome:
    """Run one CNI call. Never raises: every failure becomes an error Outcome."""
    command = environ.get("CNI_COMMAND", "")
    out = Outcome(command=command)
    if not command:
        out.stderr = about_text(role, program_version)
        return out
    try:
        env = read_env(environ)
        out.env = env
        if command == "VERSION":
            out.stdout = version_json()  # stdin is never read for VERSION, as in skel
            return out
        with out.timer.phase("decode"):
            try:
                stdin = read_stdin()
            except OSError as exc:
                raise CniError(f"error reading from stdin: {exc}", code=IO_FAILURE) from None
            req = build_request(env, stdin, out.timer)
        out.request = req
        plugin = make_plugin()
        out.stdout = call_plugin(plugin, req)
    except CniError as exc:
        out.error = exc
    except Exception as exc:  # the last line of defence: never a traceback on stdout
        log.error("unexpected failure in %s %s", role, command, exc_info=True)
        out.error = CniError(f"internal error during {command}: {type(exc).__name__}: {exc}",
                             code=INTERNAL)
    if out.error is not None:
        out.stdout = out.error.to_json()
        out.exit_code = 1
    return out
