"""A private resident server per test: ``cni-bridge serve`` of the frozen build, run in the test's
host namespace H on a socket under the test's temp dir, handed to the plugins through
CNI_BRIDGE_SOCKET (the runner fixtures pass it through). Stopped at teardown, even on failure,
together with any worker still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SOCKET_ENV, STATE_ENV
from tests.netns import PLUGIN_PATH, Netns, wait_until


@dataclass
class Resident:
    """One running ``cni-bridge serve``."""

    host: Netns
    bundle: Path
    socket: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    workers_seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # `ip netns exec` execs the server: same process

    def status(self) -> dict[str, Any] | None:
        """The server's own status (``cni-bridge status --server --json``), None if silent."""
        proc = subprocess.run([str(self.bundle / "cni-bridge"), "status", "--server", "--json",
                               "--socket", str(self.socket)], capture_output=True, text=True,
                              timeout=30, env={"PATH": PLUGIN_PATH})
        answer: dict[str, Any] | None = json.loads(proc.stdout)["server"]
        if answer:
            self.workers_seen |= {c["worker"] for c in answer["in_flight"]}
        return answer

    def served(self) -> dict[str, int]:
        answer = self.status()
        assert answer is not None, self.output()
        return dict(answer["served"])

    def in_flight(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `count` calls are running in workers; their descriptions."""
        found: list[dict[str, Any]] = []

        def running() -> bool:
            nonlocal found
            found = (self.status() or {}).get("in_flight", [])
            return len(found) >= count

        wait_until(running, f"{count} call(s) in flight", timeout)
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.workers_seen:  # a worker a failed test left waiting
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_resident(host: Netns, bundle: Path, sock: Path, env: dict[str, str],
                   args: Sequence[str] = ()) -> Resident:
    resident = Resident(host, bundle, sock, sock.with_suffix(".log"))
    host.assert_not_root()
    with open(resident.log, "wb") as log:
        resident.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.name, str(bundle / "cni-bridge"), "serve", "--socket",
             str(sock), *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: resident.proc is not None and (
            resident.proc.poll() is not None or resident.status() is not None),
            f"cni-bridge serve on {sock}", 20)
        if resident.proc.poll() is not None:
            raise RuntimeError(f"cni-bridge serve exited:\n{resident.output()}")
    except BaseException:
        resident.stop()
        raise
    return resident


@pytest.fixture
def resident(host_ns: Netns, plugin_dir: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Resident]]:
    """`resident(host=H, bundle=plugin_dir, use=True, args=())`: start a server (with extra
    `serve` arguments); with `use`, the plugins this test runs hand their calls to it
    (CNI_BRIDGE_SOCKET)."""
    if not (plugin_dir / "cni-bridge").is_file() or \
            not (plugin_dir / "_internal" / "cni_bridge_build_digest").is_file():
        pytest.skip("resident mode needs the frozen build (CNI_BRIDGE_PLUGIN_DIR=dist/cni)")
    started: list[Resident] = []

    def start(host: Netns = host_ns, bundle: Path = plugin_dir, use: bool = True,
              args: Sequence[str] = ()) -> Resident:
        sock = tmp_path / f"serve{len(started)}.sock"
        env = {"PATH": PLUGIN_PATH, STATE_ENV: os.environ[STATE_ENV]}
        started.append(start_resident(host, bundle, sock, env, args))
        if use:
            monkeypatch.setenv(SOCKET_ENV, str(sock))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def no_server_env() -> dict[str, str]:
    """Extra plugin environment for a call that must run standalone."""
    return {SOCKET_ENV: ""}


def call_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """wait_until, returning how long it took (seconds)."""
    started = time.monotonic()
    wait_until(predicate, what, timeout)
    return time.monotonic() - started
