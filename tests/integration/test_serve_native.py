"""The native hand-off (build/bootloader/cni_handoff.c) of the frozen executables, against a
scripted server on a temp socket: the call leaves before the interpreter starts (no libpython in
the caller when it says hello), with the same frames, descriptors and rules as the Python
hand-off (tests/unit/test_serve_handoff.py), and Python's hook does not ask again.

Each plugin runs in the throwaway host namespace; the calls that are not taken fail on their
config before touching anything."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge import MAX_STDIN
from cni_bridge.serve import wire
from cni_bridge.serve.server.worker import CallRequest
from tests.netns import Netns

Script = Callable[[socket.socket, dict[str, Any]], None]
_UCRED = struct.Struct("=iII")


@pytest.fixture
def frozen(plugin_dir: Path) -> Path:
    if not (plugin_dir / "_internal" / wire.DIGEST_FILE).exists():
        pytest.skip("needs the frozen build (CNI_BRIDGE_PLUGIN_DIR)")
    if wire.DEFAULT_SOCKET.encode() not in (plugin_dir / "cni-bridge").read_bytes():
        pytest.skip("built with PyInstaller's own bootloader (CNI_BRIDGE_FREEZE_NATIVE_HANDOFF=0)")
    return plugin_dir


class Scripted:
    """A server that runs `script` on every connection; what each hello showed is recorded."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path, self.script = path, script
        self.hellos: list[dict[str, Any]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        pid, _uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        _UCRED.size))
        maps = Path(f"/proc/{pid}/maps").read_text()
        data, ancillary, _f, _a = conn.recvmsg(wire.MAX_HELLO, socket.CMSG_SPACE(40))
        fds = wire.unpack_fds(ancillary)
        seen = {"hello": wire.split_frame(data, wire.MAX_HELLO)[0],  # type: ignore[index]
                "fds": [os.fstat(fd) for fd in fds], "python_started": "libpython" in maps,
                "mnt": os.stat(f"/proc/{pid}/ns/mnt").st_ino}
        for fd in fds:
            os.close(fd)
        self.hellos.append(seen)
        self.script(conn, seen)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Callable[[Script], Scripted]]:
    servers: list[Scripted] = []

    def start(script: Script) -> Scripted:
        servers.append(Scripted(tmp_path / f"s{len(servers)}.sock", script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run(host: Netns, frozen: Path, server: Scripted, stdin: bytes = b"{}",
        extra: dict[str, bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin", b"CNI_COMMAND": b"ADD",
           b"CNI_CONTAINERID": b"native1", b"CNI_NETNS": b"/proc/self/ns/net",
           b"CNI_IFNAME": b"eth0", b"CNI_PATH": str(frozen).encode(),
           b"CNI_BRIDGE_SOCKET": str(server.path).encode(), b"NOTE": "café".encode(),
           **(extra or {})}
    return subprocess.run(["ip", "netns", "exec", host.name, str(frozen / "bridge")],
                          input=stdin, env=env, capture_output=True, timeout=60,
                          preexec_fn=lambda: os.umask(0o027))


def test_an_accepted_call_leaves_before_python_starts(host_ns: Netns, frozen: Path,
                                                      scripted: Callable[[Script], Scripted]
                                                      ) -> None:
    def script(conn: socket.socket, seen: dict[str, Any]) -> None:
        wire.send(conn, wire.ACCEPT)
        seen["request"] = wire.recv(conn)
        wire.send(conn, wire.RESULT, 3, b'{"served": true}')

    server = scripted(script)
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}).encode()
    proc = run(host_ns, frozen, server, stdin)
    assert (proc.returncode, proc.stdout) == (3, b'{"served": true}'), proc.stderr
    [seen] = server.hellos
    assert seen["python_started"] is False
    digest = (frozen / "_internal" / wire.DIGEST_FILE).read_text().strip()
    hello = seen["hello"]
    assert (hello.version, hello.kind) == (wire.VERSION, wire.CALL)
    assert hello.fields == [digest.encode(), b"bridge", b"ADD"]
    net, mnt, root, cwd, _stderr = seen["fds"]
    assert net.st_ino == os.stat(host_ns.path).st_ino  # the caller's own network namespace
    assert mnt.st_ino == seen["mnt"]  # ip netns exec gave it a mount namespace of its own
    assert (root.st_ino, cwd.st_ino) == (os.stat("/").st_ino, os.stat(".").st_ino)
    request = CallRequest.parse(seen["request"])
    assert request.argv0 == str(frozen / "bridge")
    assert request.read_stdin() == stdin and request.stdin_error is None
    assert request.umask == 0o027
    assert request.environ["NOTE"] == "café"
    assert request.environ["CNI_COMMAND"] == "ADD"
    assert "CNI_BRIDGE_RUN_HERE" not in request.environ


def test_a_server_gone_after_the_request_is_code_11_never_a_local_run(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    def script(conn: socket.socket, seen: dict[str, Any]) -> None:
        wire.send(conn, wire.ACCEPT)
        seen["request"] = wire.recv(conn)  # then the worker dies: EOF

    server = scripted(script)
    proc = run(host_ns, frozen, server)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["code"] == 11 and "went away during the call" in error["msg"]
    assert error["details"] == "the peer closed the connection"
    assert len(server.hellos) == 1


def test_a_refused_call_runs_here_and_python_does_not_ask_again(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    server = scripted(lambda conn, seen: wire.send(conn, wire.REFUSE, "other build"))
    proc = run(host_ns, frozen, server)
    error = json.loads(proc.stdout)  # the call ran here: {} is no network config
    assert proc.returncode != 0 and error["code"] in (1, 6, 7), proc.stdout
    assert [seen["python_started"] for seen in server.hellos] == [False]


def test_an_environment_that_is_not_utf8_is_left_to_pythons_hook(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    server = scripted(lambda conn, seen: wire.send(conn, wire.REFUSE, "other build"))
    proc = run(host_ns, frozen, server, extra={b"ODD": b"\xff\xfe"})
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] in (1, 6, 7)
    assert [seen["python_started"] for seen in server.hellos] == [True]


def test_an_answer_of_another_protocol_version_runs_the_call_here(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    def script(conn: socket.socket, seen: dict[str, Any]) -> None:
        conn.sendall(b"\0\0\0\2" + bytes((wire.VERSION + 1, ord(wire.ACCEPT))))

    server = scripted(script)
    proc = run(host_ns, frozen, server)
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] in (1, 6, 7), proc.stdout
    assert [seen["python_started"] for seen in server.hellos] == [False]  # decided in C


def test_no_answer_within_two_seconds_runs_the_call_here(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    release = threading.Event()
    server = scripted(lambda conn, seen: release.wait(10) and None)
    try:
        proc = run(host_ns, frozen, server)
    finally:
        release.set()
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] in (1, 6, 7)
    assert [seen["python_started"] for seen in server.hellos] == [False]


def test_stdin_is_sent_up_to_one_byte_over_the_limit(
        host_ns: Netns, frozen: Path, scripted: Callable[[Script], Scripted]) -> None:
    def script(conn: socket.socket, seen: dict[str, Any]) -> None:
        wire.send(conn, wire.ACCEPT)
        seen["request"] = wire.recv(conn)
        wire.send(conn, wire.RESULT, 0, b"{}")

    server = scripted(script)
    proc = run(host_ns, frozen, server, b" " * (MAX_STDIN + 4096))
    assert proc.returncode == 0
    request = CallRequest.parse(server.hellos[0]["request"])
    assert len(request.read_stdin()) == MAX_STDIN + 1  # the dispatcher refuses it
