"""The demo's throwaway world: namespaces ``cnidemo-<pid>-<role>``: H (the node), C1, C2 and O
(the outside, linked to H over RFC 5737 addresses, no default route: nothing leaves). Every
command names its namespace: nothing runs in the one the demo was started from.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cni_bridge.admin.runtime import SBIN_PATH
from cni_bridge.deploy.install import self_command

H_UPLINK, O_ADDRESS = "198.51.100.1", "198.51.100.2"
PREFIX_LEN = 24
COMMAND_TIMEOUT = 20.0


class WorldError(Exception):
    """A namespace could not be set up or a helper failed."""


def run(*argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": os.environ.get("PATH") or SBIN_PATH, "LC_ALL": "C"}
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if check and proc.returncode != 0:
        raise WorldError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class Server:
    """An ``_echo serve`` running in a namespace."""

    ns: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def peer(self, timeout: float = 3.0) -> str | None:
        """Wait for the one exchange to finish; the address the server saw, if any."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = self.proc.communicate(timeout=timeout)
            self.lines += out.splitlines()
        return next((ln.split(" ", 1)[1] for ln in self.lines if ln.startswith("peer ")), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=2)


@dataclass
class World:
    roles: Sequence[str] = ("H", "C1", "C2", "O")
    prefix: str = field(default_factory=lambda: f"cnidemo-{os.getpid()}-")
    created: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)

    def name(self, role: str) -> str:
        return self.prefix + role

    def path(self, role: str) -> str:
        return f"/run/netns/{self.name(role)}"

    def create(self) -> None:
        for role in self.roles:
            name = self.name(role)
            if os.path.exists(f"/run/netns/{name}"):
                raise WorldError(f"namespace {name} already exists; remove it with "
                                 f"'ip netns del {name}' (left by an earlier run?)")
            self.created.append(name)  # first: an interrupt right after the add is cleaned up
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        h, o = self.name("H"), self.name("O")
        run("ip", "-n", h, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0",
            "netns", o)
        run("ip", "-n", h, "addr", "add", f"{H_UPLINK}/{PREFIX_LEN}", "dev", "uplink")
        run("ip", "-n", o, "addr", "add", f"{O_ADDRESS}/{PREFIX_LEN}", "dev", "eth0")
        run("ip", "-n", h, "link", "set", "uplink", "up")
        run("ip", "-n", o, "link", "set", "eth0", "up")
        run("ip", "-n", h, "route", "add", "default", "via", O_ADDRESS)

    def destroy(self) -> list[str]:
        """Stop our servers, delete our namespaces; returns what could not be removed."""
        for server in self.servers:
            server.stop()
        self.servers.clear()
        left = []
        for name in reversed(self.created):
            proc = run("ip", "netns", "del", name, check=False)
            if proc.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
                left.append(f"{name}: {proc.stderr.strip()}")
        self.created.clear()
        return left

    def exec(self, role: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name(role), *argv, check=check)

    def ip(self, role: str, *argv: str) -> str:
        return run("ip", "-n", self.name(role), *argv).stdout

    def serve(self, role: str, port: int, ready_timeout: float = 5.0) -> Server:
        argv = ["ip", "netns", "exec", self.name(role), *self_command(), "_echo", "serve",
                "--port", str(port), "--timeout", "8", "--reply", f"hello from {role}"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, close_fds=True)
        server = Server(role, proc)
        self.servers.append(server)
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            line = proc.stdout.readline() if ready else ""
            if line.strip() == "ready":
                return server
            if not line and proc.poll() is not None:
                break
            server.lines.append(line.rstrip())
        server.stop()
        raise WorldError(f"echo server in {role} did not start: {' '.join(server.lines)}")

    def probe(self, role: str, to: str, port: int) -> tuple[bool, str]:
        """(success, the probe's output or error)."""
        proc = self.exec(role, *self_command(), "_echo", "probe", "--to", to, "--port",
                         str(port), "--timeout", "3", check=False)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
