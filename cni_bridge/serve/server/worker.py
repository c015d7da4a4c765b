"""One served call, in a child forked for it: the caller's namespaces, environment and stdio.

In them every path (CNI_NETNS, /run/netns, /var/lib/cni, /proc, relative ones) means what it
means to the caller, and the file store and its locks are a standalone call's. Failing to enter
them is a refusal (the caller runs the call itself). The worker owns the connection until the
result is sent, whatever becomes of the server; a killed worker leaves the caller an EOF (code
11). A caller that dies takes its call with it, as without a server: SIGIO ends the worker.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cni_bridge.diag import logger
from cni_bridge.net.netns import CLONE_NEWNET
from cni_bridge.serve import wire
from cni_bridge.serve.server import view
from cni_bridge.serve.server.peer import Call

log = logger(__name__)
CLONE_NEWNS = 0x00020000


@dataclass(frozen=True)
class CallRequest:
    argv0: str
    environ: Mapping[str, str]
    stdin: bytes | None
    stdin_error: str | None
    umask: int

    @classmethod
    def parse(cls, frame: wire.Message) -> CallRequest:
        if frame.kind != wire.REQUEST:
            raise wire.ProtocolError("not a request")
        environ: dict[str, str] = {}
        for i in range(4, len(frame.fields)):  # as os.environ: the first of a name wins
            name, equals, value = frame.text(i).partition("=")
            if equals and name:
                environ.setdefault(name, value)
        error, stdin = frame.text(2) or None, frame.field(3)
        return cls(frame.text(0), environ, None if error else stdin, error,
                   frame.number(1) & 0o777)

    def read_stdin(self) -> bytes:
        if self.stdin is None:
            raise OSError(self.stdin_error or "stdin could not be read")
        return self.stdin


def enter_caller(fds: Sequence[int], setns: Callable[[int, int], None]) -> None:
    net, mnt, root, cwd, stderr = fds
    setns(mnt, CLONE_NEWNS)  # allowed: a forked worker has one thread
    setns(net, CLONE_NEWNET)
    os.fchdir(root)
    os.chroot(".")
    os.fchdir(cwd)
    sys.stderr.flush()
    os.dup2(stderr, 2)


def forget_server() -> None:
    """Drop the server's environment, which a call must not see (the call sets its own log
    level and prefix from its own, in execute_call). Idempotent; a spare does it while it
    waits (~0.4 ms of first writes to memory shared with the server)."""
    os.environ.clear()
    signal.signal(signal.SIGIO, signal.SIG_DFL)  # see end_with_caller


def adopt(request: CallRequest) -> None:
    """This process's environment, umask and argv[0] become the caller's."""
    os.environ.update(request.environ)
    os.umask(request.umask)
    if sys.argv:
        sys.argv[0] = request.argv0


def end_with_caller(conn: socket.socket, on: bool) -> None:
    """While `on`, this process ends when the caller closes the connection (SIGIO with its
    default action: the caller sends nothing after its request, so readable means closed)."""
    flags = fcntl.fcntl(conn, fcntl.F_GETFL)
    if on:  # SIGIO's action is the default since forget_server()
        fcntl.fcntl(conn, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(conn, fcntl.F_SETFL, flags | os.O_ASYNC)
    else:
        fcntl.fcntl(conn, fcntl.F_SETFL, flags & ~os.O_ASYNC)


def run(conn: socket.socket, fds: Sequence[int], call: Call, setns: Callable[[int, int], None],
        timeline: dict[str, float] | None = None) -> int:
    """Serve one call on `conn`; returns its exit status (view.EXIT_*). `timeline`: the call
    log's, so far."""
    timeline = {} if timeline is None else timeline
    conn.setblocking(True)
    try:
        enter_caller(fds, setns)
    except OSError as exc:
        log.warning("cannot enter the caller's namespaces: %s", exc)
        wire.send_quietly(conn, wire.REFUSE, f"cannot enter the caller's namespaces: {exc}")
        return view.EXIT_REFUSED
    finally:
        for fd in fds:
            os.close(fd)
    timeline["entered"] = time.time()
    try:
        wire.send(conn, wire.ACCEPT)
        request = CallRequest.parse(wire.recv(conn))
    except (OSError, EOFError, wire.ProtocolError):
        return view.EXIT_NO_REQUEST
    timeline["request"] = time.time()
    forget_server()
    end_with_caller(conn, True)
    adopt(request)
    from cni_bridge.call import execute_call

    out = execute_call(call.role, request.environ, request.read_stdin, timeline)
    if out.stderr:
        sys.stderr.write(out.stderr)
    sys.stderr.flush()
    try:
        end_with_caller(conn, False)
        wire.send(conn, wire.RESULT, out.exit_code, out.stdout)
    except OSError:
        return view.EXIT_UNDELIVERED
    return view.EXIT_SERVED

