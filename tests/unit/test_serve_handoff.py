"""The hand-off client against a scripted server on a temp socket: when it runs the call itself,
when it hands it over, and that it never falls back once the request is sent."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.serve import wire
from cni_bridge.serve.client import handoff
from cni_bridge.serve.server.worker import CallRequest

DIGEST = "0e068f26f270"
Script = Callable[[socket.socket, list[Any]], None]


class Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A plugin about to start: argv[0] bridge, ADD, a digest; output and exit captured."""
    out: dict[str, Any] = {"stdout": b"", "stdin_reads": 0}

    def read_stdin() -> tuple[bytes | None, str | None]:
        out["stdin_reads"] += 1
        return b'{"cniVersion":"1.0.0","name":"n"}', None

    def write_all(fd: int, data: bytes) -> None:
        assert fd == 1
        out["stdout"] += data

    def exit_(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(sys, "argv", ["/opt/cni/bin/bridge"])
    monkeypatch.setenv("CNI_COMMAND", "ADD")
    monkeypatch.setenv("CNI_BRIDGE_SOCKET", str(tmp_path / "serve.sock"))
    monkeypatch.setattr(wire, "build_digest", lambda: DIGEST)
    monkeypatch.setattr(handoff, "read_stdin", read_stdin)
    monkeypatch.setattr(handoff, "write_all", write_all)
    monkeypatch.setattr(wire, "HELLO_TIMEOUT", 0.5)
    monkeypatch.setattr(os, "_exit", exit_)
    out["socket"] = str(tmp_path / "serve.sock")
    yield out


def serve_once(path: str, script: Script) -> tuple[threading.Thread, list[Any]]:
    """Accept one connection and run `script` on it; what it saw goes into the list."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    seen: list[Any] = []

    def run() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with conn:
            data, ancillary, _f, _a = conn.recvmsg(wire.MAX_HELLO, socket.CMSG_SPACE(40))
            fds = wire.unpack_fds(ancillary)
            seen.append((wire.split_frame(data, wire.MAX_HELLO), len(fds)))
            for fd in fds:
                os.close(fd)
            script(conn, seen)
        listener.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, seen


@pytest.mark.parametrize(("argv0", "verb", "digest", "socket_env", "expected"), [
    ("/opt/cni/bin/bridge", "ADD", DIGEST, None, wire.DEFAULT_SOCKET),
    ("portmap", "DEL", DIGEST, "/tmp/s", "/tmp/s"),
    ("host-local", "GC", DIGEST, "", None),  # empty: never
    ("bridge", "VERSION", DIGEST, None, None),  # VERSION runs here
    ("bridge", "", DIGEST, None, None),
    ("cni-bridge", "ADD", DIGEST, None, None),  # the operator CLI
    ("bridge", "ADD", None, None, None),  # source tree: no digest
])
def test_target(argv0: str, verb: str, digest: str | None, socket_env: str | None,
                expected: str | None) -> None:
    environ = {"CNI_COMMAND": verb}
    if socket_env is not None:
        environ["CNI_BRIDGE_SOCKET"] = socket_env
    assert handoff.target(argv0, environ, digest) == expected


def test_no_server_runs_the_call_here(client: dict[str, Any]) -> None:
    assert handoff.main() is None
    assert client["stdin_reads"] == 0


def test_a_refusal_runs_the_call_here_with_stdin_untouched(client: dict[str, Any]) -> None:
    thread, seen = serve_once(client["socket"],
                              lambda conn, seen: wire.send(conn, wire.REFUSE, "other build"))
    assert handoff.main() is None
    thread.join()
    (hello, _rest), fds = seen[0]
    assert (hello.version, hello.kind) == (wire.VERSION, wire.CALL)
    assert hello.fields == [DIGEST.encode(), b"bridge", b"ADD"]
    assert fds == len(wire.CALL_FDS)
    assert client["stdin_reads"] == 0


def test_an_answer_of_another_protocol_version_runs_the_call_here(
        client: dict[str, Any]) -> None:
    def script(conn: socket.socket, seen: list[Any]) -> None:
        conn.sendall(b"\0\0\0\2" + bytes((wire.VERSION + 1, ord(wire.ACCEPT))))

    thread, _seen = serve_once(client["socket"], script)
    assert handoff.main() is None
    thread.join()
    assert client["stdin_reads"] == 0


def test_no_answer_in_time_runs_the_call_here(client: dict[str, Any]) -> None:
    release = threading.Event()
    thread, _seen = serve_once(client["socket"], lambda conn, seen: release.wait(5))
    assert handoff.main() is None
    release.set()
    thread.join()
    assert client["stdin_reads"] == 0


def test_an_accepted_call_prints_the_servers_result_and_exits_with_its_status(
        client: dict[str, Any]) -> None:
    def script(conn: socket.socket, seen: list[Any]) -> None:
        wire.send(conn, wire.ACCEPT)
        seen.append(wire.recv(conn))
        wire.send(conn, wire.RESULT, 7, b'{"code": 7}')

    thread, seen = serve_once(client["socket"], script)
    with pytest.raises(Exited) as exited:
        handoff.main()
    thread.join()
    assert exited.value.code == 7
    assert client["stdout"] == b'{"code": 7}'
    request = CallRequest.parse(seen[1])
    assert request.read_stdin() == b'{"cniVersion":"1.0.0","name":"n"}'
    assert request.environ == os.environ
    assert request.argv0 == "/opt/cni/bin/bridge"
    assert request.umask == handoff.current_umask()


def test_a_server_gone_after_the_request_is_code_11_never_a_local_run(
        client: dict[str, Any]) -> None:
    def script(conn: socket.socket, seen: list[Any]) -> None:
        wire.send(conn, wire.ACCEPT)
        seen.append(wire.recv(conn))  # then the worker dies: EOF

    thread, _seen = serve_once(client["socket"], script)
    with pytest.raises(Exited) as exited:
        handoff.main()
    thread.join()
    assert exited.value.code == 1
    error = json.loads(client["stdout"])
    assert error["code"] == 11
    assert "went away during the call" in error["msg"]
    assert client["stdin_reads"] == 1  # read once, sent once, never run here


def test_read_stdin_stops_one_byte_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = iter([b"x" * (1 << 20)] * 40)
    monkeypatch.setattr(os, "read", lambda fd, n: next(chunks)[:n])
    data, error = handoff.read_stdin()
    assert error is None and data is not None and len(data) == wire.MAX_STDIN + 1


HOOK = Path(__file__).resolve().parents[2] / "build" / "rthooks" / "pyi_rth_cni_bridge_handoff.py"


def run_hook() -> None:
    """The run-time hook as PyInstaller runs it: its source, at module level."""
    exec(compile(HOOK.read_text(), str(HOOK), "exec"), {"__name__": "handoff_hook"})


def test_after_the_bootloaders_decision_the_hook_does_not_ask_again(
        client: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list[str] = []
    monkeypatch.setattr(handoff, "connect", lambda path: connects.append(path))
    monkeypatch.setenv(wire.RUN_HERE_ENV, "1")
    run_hook()
    assert connects == []
    assert wire.RUN_HERE_ENV not in os.environ  # not inherited by the plugin's children
    run_hook()  # without the marker: Python's hand-off decides itself
    assert connects == [client["socket"]]
