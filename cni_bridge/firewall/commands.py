"""Running the firewall tools: the one place this package starts processes. Tests pass their
own `CommandRunner` (a recorder, or ``ip netns exec NS``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cni_bridge.cni.errors import CniError, TryAgainError
from cni_bridge.diag import logger

log = logger(__name__)

# iptables' exit status for "resource problem": what a lock wait that timed out reports.
XTABLES_RESOURCE_PROBLEM = 4
XTABLES_LOCK_WAIT = 5  # seconds an iptables tool waits for the xtables lock (``-w``)
TOOL_TIMEOUT = 30.0
NOT_FOUND = 127


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return " ".join(self.argv)


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult: ...


@dataclass(frozen=True)
class SubprocessRunner:
    """Runs tools with a bounded time; a missing executable is exit status 127, not an exception."""

    timeout: float = TOOL_TIMEOUT
    env: Mapping[str, str] | None = field(default=None)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        import subprocess  # here: ~7 ms of imports that a call running no tool never pays

        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), input=input if input is not None else "", capture_output=True,
                text=True, timeout=self.timeout, check=False,
                env=dict(self.env) if self.env is not None else _default_env(),
            )
        except FileNotFoundError:
            return CommandResult(tuple(argv), NOT_FOUND, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return CommandResult(tuple(argv), -1, "", f"timed out after {self.timeout:g}s")
        log.debug("%s: rc=%d in %.1f ms", " ".join(argv), proc.returncode,
                  (time.monotonic() - started) * 1000)
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def _default_env() -> dict[str, str]:
    """Runtimes may start plugins with an empty PATH; the tools live in the sbin directories."""
    env = dict(os.environ)
    path = env.get("PATH", "")
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")
             if d not in path.split(":")]
    env["PATH"] = ":".join([p for p in [path, *extra] if p])
    env.setdefault("LC_ALL", "C")
    return env


def check(result: CommandResult, what: str) -> CommandResult:
    if result.ok:
        return result
    details = f"{result.describe()}: exit {result.returncode}: {result.stderr.strip()}"
    if result.returncode == XTABLES_RESOURCE_PROBLEM:
        raise TryAgainError(f"{what}: the xtables lock is held by another program", details)
    raise CniError(what, details)
