"""Who may be served: the decision on a HELLO (pure), and reading a peer's identity.

A call is served only for root (SO_PEERCRED uid 0) in the server's own user and PID namespaces,
by a server of the same build. Another PID namespace is refused because the worker, though it
enters the caller's mount namespace, stays in the server's PID namespace: /proc would then
describe processes other than the caller's (``/proc/self`` would not even exist), and paths the
caller passes (CNI_NETNS=/proc/<pid>/ns/net) would name other processes. A refused caller runs the
call itself, so refusing is always safe.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from cni_bridge import PLUGIN_ROLES
from cni_bridge.serve.wire import CALL, SERVED_VERBS, STATUS, VERSION, Message

_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Identity:
    """A process as the server sees it; namespaces by inode (None: not visible)."""

    pid: int
    uid: int
    user_ns: int | None
    pid_ns: int | None


@dataclass(frozen=True)
class Call:
    role: str
    verb: str


def _ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def peer_identity(sock: socket.socket) -> Identity:
    """The connecting process (SO_PEERCRED; its PID as seen from our PID namespace, 0 when it
    is not visible from here)."""
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   _UCRED.size))
    if pid <= 0:
        return Identity(pid, uid, None, None)
    return Identity(pid, uid, _ns_inode(pid, "user"), _ns_inode(pid, "pid"))


def own_identity() -> Identity:
    return Identity(os.getpid(), os.getuid(), _ns_inode("self", "user"), _ns_inode("self", "pid"))


def refusal(hello: Message, peer: Identity, home: Identity, digest: str | None) -> str | None:
    """Why this first frame is refused (the caller then runs the call itself), or None."""
    if hello.version != VERSION:
        return f"caller speaks another protocol (version byte {hello.version}, not {VERSION})"
    if hello.kind not in (CALL, STATUS):
        return f"{hello.kind!r} is not a call or status frame"
    if peer.uid != 0:
        return f"caller uid {peer.uid} is not root"
    if hello.kind == STATUS:
        return None
    if len(hello.fields) != 3:
        return "malformed call frame"
    their_digest, role, verb = (hello.text(i) for i in range(3))
    if peer.pid_ns is None or peer.pid_ns != home.pid_ns:
        return "caller runs in another PID namespace"
    if peer.user_ns is None or peer.user_ns != home.user_ns:
        return "caller runs in another user namespace"
    if digest is None or their_digest != digest:
        return f"caller's build {their_digest} is not the server's {digest}"
    if role not in PLUGIN_ROLES or verb not in SERVED_VERBS:
        return f"{role} {verb} is not a served call"
    return None


def call_of(hello: Message) -> Call:
    return Call(hello.text(1), hello.text(2))
