"""The resident server's protocol: frames, descriptors, the socket and digest rules."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import socket
import sys
from pathlib import Path

import pytest

from cni_bridge import PLUGIN_ROLES
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
    data = wire.encode(wire.REQUEST, "/bin/bridge", -0o22, "", b"\0" * 10, "A=b\udcff")
    data += wire.encode(wire.RESULT, 0, b"{}")
    assert wire.split_frame(data[:3], 1 << 20) is None  # header incomplete
    assert wire.split_frame(data[:10], 1 << 20) is None  # body incomplete
    first = wire.split_frame(data, 1 << 20)
    assert first is not None
    request = first[0]
    assert (request.version, request.kind, len(request.fields)) == (wire.VERSION, wire.REQUEST, 5)
    assert (request.text(0), request.number(1), request.text(4)) == (
        "/bin/bridge", -0o22, "A=b\udcff")
    assert request.fields[4] == b"A=b\xff"  # undecodable bytes travel as they are
    second = wire.split_frame(first[1], 1 << 20)
    assert second is not None and second[1] == b""
    assert (second[0].kind, second[0].number(0), second[0].field(1)) == (wire.RESULT, 0, b"{}")


def test_the_frame_layout_is_the_documented_one() -> None:
    assert wire.encode(wire.RESULT, 3, b"ok") == (
        b"\0\0\0\x10" + bytes((wire.VERSION,)) + b"R" + b"\0\0\0\4\0\0\0\3" + b"\0\0\0\2ok")


def test_another_version_is_not_read_further() -> None:
    message = wire.decode(bytes((wire.VERSION + 1,)) + b"C\xff\xff")  # its fields: not ours
    assert (message.version, message.kind, message.fields) == (wire.VERSION + 1, "", [])
    old = wire.decode(b"\xa9\x06")  # version 1 was marshal: a tuple's first byte
    assert old.version != wire.VERSION


def test_oversized_and_garbage_frames_are_protocol_errors() -> None:
    with pytest.raises(wire.ProtocolError, match="at most 16"):
        wire.split_frame(wire.encode(wire.RESULT, b"x" * 100), 16)
    with pytest.raises(wire.ProtocolError, match="runs past"):
        wire.split_frame(b"\0\0\0\7" + bytes((wire.VERSION,)) + b"R\0\0\0\x09x", 100)
    with pytest.raises(wire.ProtocolError, match="without version"):
        wire.decode(b"")
    short = wire.decode(wire.encode(wire.RESULT, b"ab")[4:])
    with pytest.raises(wire.ProtocolError, match="not a number"):
        short.number(0)
    with pytest.raises(wire.ProtocolError, match="without field 1"):
        short.field(1)


def test_send_and_recv_with_descriptors_over_a_socket_pair() -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        wire.send(a, wire.CALL, "digest", fds=[r, w])
        data, ancillary, _flags, _ = b.recvmsg(4096, socket.CMSG_SPACE(4 * 8))
        fds = wire.unpack_fds(ancillary)
        assert len(fds) == 2
        hello = wire.split_frame(data, 4096)
        assert hello is not None and hello[0].fields == [b"digest"] and hello[1] == b""
        os.write(fds[1], b"ping")  # the received descriptors are the pipe's ends
        assert os.read(r, 4) == b"ping"
        for fd in fds:
            os.close(fd)
        big = os.urandom(3 << 20)  # larger than the socket buffer: sendall
        a.settimeout(5)
        b.settimeout(5)
        import threading

        sender = threading.Thread(target=wire.send, args=(a, wire.RESULT, 0, big))
        sender.start()
        assert wire.recv(b).field(1) == big
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


BOOTLOADER = Path(__file__).resolve().parents[2] / "build" / "bootloader"


def generated_header() -> dict[str, object]:
    """The #defines build/bootloader/wire_header.py writes for the C side, evaluated."""
    spec = importlib.util.spec_from_file_location("wire_header", BOOTLOADER / "wire_header.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: dict[str, object] = {}
    for name, value in re.findall(r"^#define (\w+) (.+)$", module.header(), re.MULTILINE):
        if value.startswith("{"):
            found[name] = tuple(re.findall(r'"([^"]*)"', value))
        else:
            found[name] = ast.literal_eval(value)
    return found


def test_the_bootloaders_constants_are_generated_from_this_module() -> None:
    c = generated_header()
    assert c["WIRE_VERSION"] == wire.VERSION
    assert (c["KIND_CALL"], c["KIND_ACCEPT"], c["KIND_REQUEST"], c["KIND_RESULT"]) == (
        wire.CALL, wire.ACCEPT, wire.REQUEST, wire.RESULT)
    assert c["DEFAULT_SOCKET"] == wire.DEFAULT_SOCKET
    assert c["DIGEST_FILE"] == f"_internal/{wire.DIGEST_FILE}"
    assert (c["MAX_STDIN"], c["MAX_HELLO"], c["MAX_FRAME"]) == (
        wire.MAX_STDIN, wire.MAX_HELLO, wire.MAX_FRAME)
    assert c["HELLO_TIMEOUT_S"] == wire.HELLO_TIMEOUT
    assert (c["SOCKET_ENV"], c["RUN_HERE_ENV"]) == (wire.SOCKET_ENV, wire.RUN_HERE_ENV)
    assert c["CALL_FDS"] == len(wire.CALL_FDS)
    assert c["ROLES_INIT"] == PLUGIN_ROLES
    assert c["VERBS_INIT"] == wire.SERVED_VERBS


def test_the_c_side_defines_no_protocol_constant_of_its_own() -> None:
    text = (BOOTLOADER / "cni_handoff.c").read_text()
    assert '#include "cni_handoff_wire.h"' in text
    assert re.findall(r"^#define (\w+)", text, re.MULTILINE) == ["_GNU_SOURCE"]
    for literal in (wire.DEFAULT_SOCKET, wire.SOCKET_ENV, wire.RUN_HERE_ENV, wire.DIGEST_FILE,
                    *PLUGIN_ROLES):
        assert f'"{literal}' not in text
