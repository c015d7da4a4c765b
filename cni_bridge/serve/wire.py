"""The resident server's protocol, shared by the hand-off client and the server.

Builtin modules only (``_socket``, ``marshal``, ``os``, ``sys``): the client runs this at the very
top of a plugin's start-up, before anything else is imported.

A frame is a 4-byte big-endian length and a ``marshal``-ed value (client and server of one build
digest run the same interpreter). A plugin call::

    client -> HELLO ("hello", PROTOCOL, "call", digest, role, verb), with SCM_RIGHTS descriptors
              of the caller's network namespace, mount namespace, root, cwd and stderr
    server -> ACCEPT, or REFUSE (reason)   refusal, EOF or timeout: the client runs the call itself
    client -> REQUEST {argv0, environ, stdin, stdin_error, umask}
    server -> RESULT (exit code, stdout)   EOF instead: the call's fate is unknown (code 11)

``cni-bridge status``::

    client -> HELLO ("hello", PROTOCOL, "status", netns inode, state root)
    server -> STATUS (JSON text), or REFUSE (reason)
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: it costs a plugin's start-up
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
SOCKET_ENV = "CNI_BRIDGE_SOCKET"  # empty: never hand a call over
# Set by the bootloader's hand-off (build/bootloader/cni_handoff.c) once it has decided that the
# call runs here (no server, a refusal, not a served call): the run-time hook
# (build/rthooks/pyi_rth_cni_bridge_handoff.py) then pops it and imports nothing.
RUN_HERE_ENV = "CNI_BRIDGE_RUN_HERE"
DEFAULT_SOCKET = "/run/cni-bridge/serve.sock"
DIGEST_FILE = "cni_bridge_build_digest"  # in the bundle (sys._MEIPASS), written by the build
PLUGIN_ROLES = ("bridge", "host-local", "portmap", "loopback")
SERVED_VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
MAX_STDIN = 16 * 1024 * 1024  # spec.dispatch.MAX_STDIN (a unit test holds them equal)
MAX_FRAME = MAX_STDIN + (4 << 20)  # the stdin plus the environment
MAX_HELLO = 4096
HELLO_TIMEOUT = 2.0  # connect and the server's answer; then the call runs locally

HELLO, ACCEPT, REFUSE, REQUEST, RESULT, STATUS = (
    "hello", "accept", "refuse", "request", "result", "status")
CALL = "call"
# The descriptors a call's HELLO carries, in this order.
CALL_FDS = ("net", "mnt", "root", "cwd", "stderr")
_INT = 4  # SCM_RIGHTS carries native C ints
_HEADER = 4


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def socket_path(environ: Any) -> str | None:
    """The server's socket for this process: env CNI_BRIDGE_SOCKET, the default when unset,
    None when set but empty."""
    value = environ.get(SOCKET_ENV)
    if value is None:
        return DEFAULT_SOCKET
    return value or None


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


def encode(value: Any) -> bytes:
    body = marshal.dumps(value)
    return len(body).to_bytes(_HEADER, "big") + body


def decode(body: bytes) -> Any:
    try:
        return marshal.loads(body)
    except (EOFError, ValueError, TypeError) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None


def pack_fds(fds: Any) -> bytes:
    return b"".join(fd.to_bytes(_INT, sys.byteorder) for fd in fds)


def unpack_fds(ancillary: Any) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT
            fds += [int.from_bytes(data[i:i + _INT], sys.byteorder) for i in range(0, usable, _INT)]
    return fds


def send(sock: Any, value: Any, fds: Any = ()) -> None:
    """One frame; `fds` travel with its first bytes."""
    data = encode(value)
    if fds:
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack_fds(fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def send_quietly(sock: Any, value: Any) -> None:
    """`send`, for an answer the peer may have stopped waiting for (it then runs the call
    itself): a failure is not an error."""
    try:  # noqa: SIM105 (contextlib is not imported here)
        send(sock, value)
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


def recv(sock: Any, limit: int = MAX_FRAME) -> Any:
    """One frame (blocking, or within the socket's timeout)."""
    size = int.from_bytes(recv_exact(sock, _HEADER), "big")
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes (at most {limit})")
    return decode(recv_exact(sock, size))


def frame_size(buffer: bytes) -> int | None:
    """The whole frame's size once its header is in `buffer`."""
    if len(buffer) < _HEADER:
        return None
    return _HEADER + int.from_bytes(buffer[:_HEADER], "big")


def split_frame(buffer: bytes, limit: int) -> tuple[Any, bytes] | None:
    """(value, rest) when `buffer` holds a whole frame, else None (read more)."""
    size = frame_size(buffer)
    if size is not None and size - _HEADER > limit:
        raise ProtocolError(f"frame of {size - _HEADER} bytes (at most {limit})")
    if size is None or len(buffer) < size:
        return None
    return decode(buffer[_HEADER:size]), buffer[size:]
