"""The resident server's protocol: frames, descriptors, the socket and digest rules."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest

from cni_bridge.cni.dispatch import MAX_STDIN
from cni_bridge.cni.env import VERBS
from cni_bridge.serve import wire


def test_limits_and_verbs_match_the_dispatcher() -> None:
    assert wire.MAX_STDIN == MAX_STDIN
    assert set(wire.SERVED_VERBS) == set(VERBS) - {"VERSION"}
    assert wire.MAX_FRAME > MAX_STDIN


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, wire.DEFAULT_SOCKET),
    ({"CNI_BRIDGE_SOCKET": "/tmp/x.sock"}, "/tmp/x.sock"),
    ({"CNI_BRIDGE_SOCKET": ""}, None),
])
def test_socket_path(environ: dict[str, str], expected: str | None) -> None:
    assert wire.socket_path(environ) == expected


def test_frames_round_trip_and_split() -> None:
    value = ("request", {"environ": {"A": "b\udcff"}, "stdin": b"\0" * 10, "umask": 0o22})
    data = wire.encode(value) + wire.encode(("result", 0, b"{}"))
    assert wire.split_frame(data[:3], 1 << 20) is None  # header incomplete
    assert wire.split_frame(data[:10], 1 << 20) is None  # body incomplete
    first = wire.split_frame(data, 1 << 20)
    assert first is not None and first[0] == value
    second = wire.split_frame(first[1], 1 << 20)
    assert second == (("result", 0, b"{}"), b"")


def test_oversized_and_garbage_frames_are_protocol_errors() -> None:
    with pytest.raises(wire.ProtocolError, match="at most 16"):
        wire.split_frame(wire.encode(b"x" * 100), 16)
    with pytest.raises(wire.ProtocolError, match="undecodable"):
        wire.split_frame(b"\0\0\0\3\xff\xfe\xfd", 100)


def test_send_and_recv_with_descriptors_over_a_socket_pair() -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        wire.send(a, ("hello", 1), [r, w])
        data, ancillary, _flags, _ = b.recvmsg(4096, socket.CMSG_SPACE(4 * 8))
        fds = wire.unpack_fds(ancillary)
        assert len(fds) == 2
        assert wire.split_frame(data, 4096) == (("hello", 1), b"")
        os.write(fds[1], b"ping")  # the received descriptors are the pipe's ends
        assert os.read(r, 4) == b"ping"
        for fd in fds:
            os.close(fd)
        big = ("result", 0, os.urandom(3 << 20))  # larger than the socket buffer: sendall
        a.settimeout(5)
        b.settimeout(5)
        import threading

        sender = threading.Thread(target=wire.send, args=(a, big))
        sender.start()
        assert wire.recv(b) == big
        sender.join()
        a.close()
        with pytest.raises(EOFError):
            wire.recv(b)
    finally:
        os.close(r)
        os.close(w)
        b.close()


def test_build_digest_only_in_a_frozen_bundle(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert wire.build_digest() is None  # the source tree
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert wire.build_digest() is None  # no digest file: never hand over
    (tmp_path / wire.DIGEST_FILE).write_text("0e068f26f270\n")
    assert wire.build_digest() == "0e068f26f270"


C_HANDOFF = Path(__file__).resolve().parents[2] / "build" / "bootloader" / "cni_handoff.c"


def c_constants() -> dict[str, object]:
    """The #defines and string arrays of the bootloader's hand-off, evaluated."""
    text = C_HANDOFF.read_text()
    found: dict[str, object] = {}
    for name, value in re.findall(r"^#define ([A-Z_]+) (.+?)\s*$", text, re.MULTILINE):
        if value.startswith('"'):
            found[name] = value.strip('"')
        elif re.fullmatch(r"[\d\s()*+<A-Z_]+", value):
            found[name] = eval(value, {}, dict(found))  # noqa: S307 (integer arithmetic)
    for name, items in re.findall(r"const char \*const ([A-Z]+)\[\] = \{(.*?)\};", text):
        found[name] = tuple(re.findall(r'"([^"]*)"', items))
    return found


def test_the_bootloaders_hand_off_speaks_this_protocol() -> None:
    c = c_constants()
    assert c["PROTOCOL"] == wire.PROTOCOL
    assert c["DEFAULT_SOCKET"] == wire.DEFAULT_SOCKET
    assert c["DIGEST_FILE"] == f"_internal/{wire.DIGEST_FILE}"
    assert (c["MAX_STDIN"], c["MAX_HELLO"], c["MAX_FRAME"]) == (
        wire.MAX_STDIN, wire.MAX_HELLO, wire.MAX_FRAME)
    assert c["HELLO_TIMEOUT_S"] == wire.HELLO_TIMEOUT
    assert (c["SOCKET_ENV"], c["RUN_HERE_ENV"]) == (wire.SOCKET_ENV, wire.RUN_HERE_ENV)
    assert c["ROLES"] == wire.PLUGIN_ROLES
    assert c["VERBS"] == wire.SERVED_VERBS
    text = C_HANDOFF.read_text()
    for word in (wire.HELLO, wire.CALL, wire.ACCEPT, wire.REQUEST, wire.RESULT):
        assert f'"{word}"' in text
