"""The resident server's protocol: the hand-off client (here, and in C in build/bootloader/
cni_handoff.c, whose constants build/bootloader/wire_header.py generates from this module) and
the server. Builtin modules only: the client runs this at the very top of a plugin's start-up.

A frame, integers big-endian::

    u32 size of the rest | u8 VERSION | u8 kind | field ...      field: u32 size | bytes

Text is UTF-8 (surrogateescape: an environment's undecodable bytes travel as they are), a number
is 4 bytes, signed. A connection's first frame (its HELLO) is a CALL or a STATUS. A frame of
another VERSION is not read further: the server refuses the caller, a client takes the answer
for a refusal, and the call runs in the plugin's own process. A plugin call::

    client -> CALL digest role verb, its first bytes carrying SCM_RIGHTS descriptors of the
              caller's network namespace, mount namespace, root, cwd and stderr (CALL_FDS)
    server -> ACCEPT, or REFUSE reason   refusal, EOF or timeout: the client runs the call itself
    client -> REQUEST argv0 umask stdin_error stdin NAME=value ...   stdin_error empty: stdin read
    server -> RESULT exit_code stdout    EOF instead: the call's fate is unknown (code 11)

``cni-bridge status``: client -> STATUS; server -> STATUS json, or REFUSE reason.
"""

from __future__ import annotations

import _socket
import os
import sys

from cni_bridge import MAX_STDIN

TYPE_CHECKING = False  # typing itself is not imported: it costs a plugin's start-up
if TYPE_CHECKING:
    from typing import Any

VERSION = 2  # 1: CPython's marshal
CALL, STATUS, ACCEPT, REFUSE, REQUEST, RESULT = "C", "S", "A", "N", "Q", "R"
SOCKET_ENV = "CNI_BRIDGE_SOCKET"  # empty: never hand a call over
# Set by the bootloader's hand-off once it has decided that the call runs here (no server, a
# refusal, not a served call): the run-time hook then pops it and imports nothing.
RUN_HERE_ENV = "CNI_BRIDGE_RUN_HERE"
DEFAULT_SOCKET = "/run/cni-bridge/serve.sock"
DIGEST_FILE = "cni_bridge_build_digest"  # in the bundle (sys._MEIPASS), written by the build
SERVED_VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
MAX_FRAME = MAX_STDIN + (4 << 20)  # the stdin plus the environment
MAX_HELLO = 4096
HELLO_TIMEOUT = 2  # seconds: connect and the server's answer; then the call runs locally
CALL_FDS = ("net", "mnt", "root", "cwd", "stderr")  # a CALL's descriptors, in this order
_INT = 4  # SCM_RIGHTS carries native C ints
_SIZE = 4


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class Message:
    """A received frame: its kind and raw fields. Of another version: kind "", no fields."""

    __slots__ = ("version", "kind", "fields")

    def __init__(self, version: int, kind: str, fields: list[bytes]) -> None:
        self.version, self.kind, self.fields = version, kind, fields

    def field(self, index: int) -> bytes:
        if index < len(self.fields):
            return self.fields[index]
        raise ProtocolError(f"{self.kind!r} frame without field {index}")

    def text(self, index: int) -> str:
        return self.field(index).decode("utf-8", "surrogateescape")

    def number(self, index: int) -> int:
        data = self.field(index)
        if len(data) != _SIZE:
            raise ProtocolError(f"{self.kind!r} frame's field {index} is not a number")
        return int.from_bytes(data, "big", signed=True)


def socket_path(environ: Any) -> str | None:
    """CNI_BRIDGE_SOCKET, the default when unset, None when set but empty."""
    value = environ.get(SOCKET_ENV)
    return DEFAULT_SOCKET if value is None else value or None


def build_digest() -> str | None:
    """The digest the build wrote into the frozen bundle; None from the source tree."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or base is None:
        return None
    try:
        fd = os.open(os.path.join(base, DIGEST_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 256).decode("ascii", "replace").strip() or None
    finally:
        os.close(fd)


def _field(value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        value = value.to_bytes(_SIZE, "big", signed=True)
    elif isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return len(value).to_bytes(_SIZE, "big") + value


def encode(kind: str, *fields: bytes | str | int) -> bytes:
    body = b"".join([bytes((VERSION, ord(kind))), *map(_field, fields)])
    return len(body).to_bytes(_SIZE, "big") + body


def decode(body: bytes) -> Message:
    if len(body) < 2:
        raise ProtocolError("frame without version and kind")
    if body[0] != VERSION:
        return Message(body[0], "", [])
    fields, at = [], 2
    while at < len(body):
        end = at + _SIZE + int.from_bytes(body[at:at + _SIZE], "big")
        if end > len(body):
            raise ProtocolError("a field runs past the end of its frame")
        fields.append(body[at + _SIZE:end])
        at = end
    return Message(VERSION, chr(body[1]), fields)


def unpack_fds(ancillary: Any) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT
            fds += [int.from_bytes(data[i:i + _INT], sys.byteorder) for i in range(0, usable, _INT)]
    return fds


def send(sock: Any, kind: str, *fields: bytes | str | int, fds: Any = ()) -> None:
    """One frame; `fds` travel with its first bytes."""
    data = encode(kind, *fields)
    if fds:
        rights = b"".join(fd.to_bytes(_INT, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        data = data[sent:]
    if data:
        sock.sendall(data)


def send_quietly(sock: Any, kind: str, *fields: bytes | str | int) -> None:
    """`send`, for an answer the peer may have stopped waiting for (it then runs the call
    itself): a failure is not an error."""
    try:  # noqa: SIM105 (contextlib is not imported here)
        send(sock, kind, *fields)
    except OSError:
        pass


def recv_exact(sock: Any, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _size(header: bytes, limit: int) -> int:
    size = int.from_bytes(header, "big")
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes (at most {limit})")
    return size


def recv(sock: Any, limit: int = MAX_FRAME) -> Message:
    return decode(recv_exact(sock, _size(recv_exact(sock, _SIZE), limit)))


def split_frame(buffer: bytes, limit: int) -> tuple[Message, bytes] | None:
    """(message, rest) when `buffer` holds a whole frame, else None (read more)."""
    end = _SIZE + _size(buffer[:_SIZE], limit) if len(buffer) >= _SIZE else None
    if end is None or len(buffer) < end:
        return None
    return decode(buffer[_SIZE:end]), buffer[end:]
