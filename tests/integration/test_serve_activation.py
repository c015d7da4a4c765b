"""Resident mode started the way systemd starts it: socket activation.

``systemd-socket-activate`` is systemd's own implementation of the LISTEN_FDS protocol (PID 1 is
not systemd where the tests run): it listens on the socket, and at the first connection execs
``cni-bridge serve`` with the listening socket as fd 3 and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES
set, exactly as systemd does for ``cni-bridge.socket``. All of it inside the test's host
namespace H, on a socket under the test's temp dir.

- The first call after "boot" connects while no server runs yet: it is served, once, whether
  the bootloader's hand-off or Python's hands it over.
- A server that starts later than the caller waits runs nothing of that call: the caller ran
  it standalone, before sending it.
- The server leaves systemd's socket file alone when it stops; a socket that is not the one
  `--socket` names is refused.
- The shipped units pass ``systemd-analyze verify``; ``install --serve`` writes nothing where
  systemd does not run, and writes verifiable units with ``--systemd-dir``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SOCKET_ENV, STATE_ENV, RunPlugin
from tests.integration.test_serve_common import call_log
from tests.netns import PLUGIN_PATH, Netns, wait_until

ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
ANALYZE = shutil.which("systemd-analyze")
NETWORK = "actnet"


def ipam_conf(data_dir: Path) -> dict[str, object]:
    return {"cniVersion": "1.1.0", "name": NETWORK, "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.62.0.0/24"}]]}}


class Activated:
    """`systemd-socket-activate` listening in H for one ``cni-bridge serve`` (same pid)."""

    def __init__(self, host: Netns, bundle: Path, sock: Path, serve_args: Sequence[str] = (),
                 wrapper: Sequence[str] = ()) -> None:
        self.sock, self.log = sock, sock.with_suffix(".log")
        env = [f"--setenv={k}={v}" for k, v in
               (("PATH", PLUGIN_PATH), (STATE_ENV, os.environ[STATE_ENV]))]
        argv = ["ip", "netns", "exec", host.name, ACTIVATE, "--listen", str(sock),
                "--fdname=cni-bridge.socket", *env, *wrapper, str(bundle / "cni-bridge"),
                "serve", "--socket", str(serve_args[0] if serve_args else sock)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_until(lambda: sock.exists() or self.proc.poll() is not None,
                   f"systemd-socket-activate on {sock}", 10)
        assert self.proc.poll() is None, self.output()

    def program(self) -> str:
        """What the activator's process runs now (it execs the server at the first call)."""
        return os.path.basename(os.readlink(f"/proc/{self.proc.pid}/exe"))

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self, bundle: Path) -> dict[str, Any]:
        """The server's own status (connecting starts it, as a call would); {} if silent."""
        out = subprocess.run([str(bundle / "cni-bridge"), "status", "--server", "--json",
                              "--socket", str(self.sock)], capture_output=True, text=True,
                             timeout=30, env={"PATH": PLUGIN_PATH}).stdout
        answer: dict[str, Any] = (json.loads(out)["server"] if out else None) or {}
        return answer

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def activate(host_ns: Netns, plugin_dir: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Activated]]:
    if not os.access(ACTIVATE, os.X_OK):
        pytest.skip("systemd-socket-activate is not installed")
    if not (plugin_dir / "_internal" / "cni_bridge_build_digest").is_file():
        pytest.skip("resident mode needs the frozen build (CNI_BRIDGE_PLUGIN_DIR=dist/cni)")
    started: list[Activated] = []

    def start(serve_args: Sequence[str] = (), wrapper: Sequence[str] = ()) -> Activated:
        sock = tmp_path / f"act{len(started)}.sock"
        started.append(Activated(host_ns, plugin_dir, sock, serve_args, wrapper))
        monkeypatch.setenv(SOCKET_ENV, str(sock))
        return started[-1]

    yield start
    for activated in started:
        activated.stop()


def test_the_first_call_starts_the_server_and_is_served_once(
        host_ns: Netns, activate: Callable[..., Activated], run_plugin: RunPlugin,
        plugin_dir: Path, tmp_path: Path) -> None:
    server = activate()
    assert server.program() == "systemd-socket-activate"  # nothing of ours runs yet
    log = tmp_path / "calls.jsonl"
    first = run_plugin(host_ns, "host-local", "ADD", ipam_conf(tmp_path / "ipam"),
                       container_id="first", netns=host_ns, env={"CNI_BRIDGE_LOG": str(log)})
    assert first.rc == 0, first.stdout + first.stderr + server.output()
    assert first.json["ips"][0]["address"] == "10.62.0.2/24"
    assert [(r["role"], r["verb"], r["served"]) for r in call_log(log)] == \
        [("host-local", "ADD", True)]  # one execution, in the server
    assert server.program() == "cni-bridge"  # the activator exec'd the server, same pid
    reservations = [p.name for p in (tmp_path / "ipam" / NETWORK).iterdir()
                    if p.name.startswith("10.")]
    assert reservations == ["10.62.0.2"]
    assert server.status(plugin_dir)["served"] == {"ADD": 1}
    assert "(systemd's socket)" in server.output()
    assert server.stop() == 0
    assert server.sock.exists()  # systemd's: the server never removes it


def test_pythons_hook_waits_for_the_starting_server_too(
        host_ns: Netns, activate: Callable[..., Activated], run_plugin: RunPlugin,
        tmp_path: Path) -> None:
    """An environment that is not UTF-8 is left by the bootloader's hand-off to Python's
    (test_serve_native.py); its wait covers the server's start the same way."""
    server = activate()
    log = tmp_path / "calls.jsonl"
    first = run_plugin(host_ns, "host-local", "ADD", ipam_conf(tmp_path / "ipam"),
                       container_id="odd", netns=host_ns,
                       env={"CNI_BRIDGE_LOG": str(log), "ODD": "\udcff\udcfe"})
    assert first.rc == 0, first.stdout + first.stderr + server.output()
    assert [(r["verb"], r["served"]) for r in call_log(log)] == [("ADD", True)]
    assert server.program() == "cni-bridge"


def test_a_server_slower_than_the_callers_wait_runs_nothing_of_its_call(
        host_ns: Netns, activate: Callable[..., Activated], run_plugin: RunPlugin,
        plugin_dir: Path, tmp_path: Path) -> None:
    """The caller gives up on its HELLO (2 s) and runs the call itself before sending it; the
    server, when it starts, finds the HELLO in its socket's queue but no request follows."""
    server = activate(wrapper=["sh", "-c", 'sleep 4; exec "$@"', "sh"])  # exec: same pid
    log = tmp_path / "calls.jsonl"
    call = run_plugin(host_ns, "host-local", "ADD", ipam_conf(tmp_path / "ipam"),
                      container_id="slow", netns=host_ns, env={"CNI_BRIDGE_LOG": str(log)})
    assert call.rc == 0, call.stdout + call.stderr
    wait_until(lambda: server.status(plugin_dir).get("abandoned") == 1,
               "the late server to find the HELLO and no request", 20)
    status = server.status(plugin_dir)
    assert (status["served_total"], status["lost"], status["in_flight"]) == (0, 0, [])
    assert [(r["verb"], r["served"]) for r in call_log(log)] == [("ADD", False)]
    reservations = [p.name for p in (tmp_path / "ipam" / NETWORK).iterdir()
                    if p.name.startswith("10.")]
    assert reservations == ["10.62.0.2"]


def test_a_socket_other_than_the_one_named_is_refused(
        host_ns: Netns, activate: Callable[..., Activated], tmp_path: Path) -> None:
    server = activate(serve_args=[str(tmp_path / "other.sock")])
    subprocess.run(["ip", "netns", "exec", host_ns.name, "python3", "-c",
                    f"import socket; socket.socket(socket.AF_UNIX).connect({str(server.sock)!r})"],
                   check=True, timeout=10)
    assert server.proc.wait(timeout=20) != 0
    assert f"is '{server.sock}', not {tmp_path / 'other.sock'}" in server.output()
    assert not (tmp_path / "other.sock").exists()


def verify(paths: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run([ANALYZE, "--man=no", "verify", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    if "Failed to" in proc.stderr and "cni-bridge" not in proc.stderr:
        pytest.skip(f"systemd-analyze verify does not work here: {proc.stderr.strip()}")
    return proc


def test_the_shipped_units_verify(plugin_dir: Path, tmp_path: Path) -> None:
    """As shipped, with ExecStart pointed at this build (verify checks it is executable)."""
    deploy = Path(__file__).resolve().parents[2] / "conf" / "deploy" / "systemd"
    for unit in deploy.iterdir():
        text = unit.read_text().replace("/opt/cni/bin/cni-bridge", str(plugin_dir / "cni-bridge"))
        (tmp_path / unit.name).write_text(text)
    proc = verify(sorted(tmp_path.iterdir()))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.skipif(Path("/run/systemd/system").exists(),
                    reason="systemd runs here: install --serve would enable units on this machine")
def test_install_serve_writes_nothing_without_systemd_unless_given_a_directory(
        plugin_dir: Path, tmp_path: Path) -> None:
    if not (plugin_dir / "_internal" / "cni_bridge_build_digest").is_file():
        pytest.skip("install copies the frozen build")
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    argv = [str(plugin_dir / "cni-bridge"), "install", "--serve", "--bin-dir", str(bin_dir)]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "systemd is not running here" in refused.stderr and "--systemd-dir" in refused.stderr
    assert not bin_dir.exists()  # nothing half-done: not even the plugins

    done = subprocess.run([*argv, "--systemd-dir", str(units)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "systemctl enable --now cni-bridge.socket" in done.stdout
    assert sorted(p.name for p in units.iterdir()) == ["cni-bridge.service", "cni-bridge.socket"]
    service = (units / "cni-bridge.service").read_text()
    assert f"ExecStart={bin_dir.resolve()}/cni-bridge serve\n" in service
    proc = verify(sorted(units.iterdir()))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
