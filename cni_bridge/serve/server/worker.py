"""One served call, in a child forked for it: the caller's namespaces, environment and stdio.

The worker enters the caller's mount namespace, then its network namespace, takes its root and
cwd, and writes warnings to its stderr; so every path (CNI_NETNS, /run/netns, /var/lib/cni, /proc,
/sys) and every relative path means exactly what it means to the caller, and the file store and
its locks are the ones a standalone call would use. Only then does it accept the call: a failure
to get there is a refusal, and the caller runs the call itself.

The worker owns the connection until the result is sent: a server whose main process dies
meanwhile does not lose the call; a worker killed meanwhile leaves the caller an EOF (code 11).
The other way round, a caller that dies (a runtime's timeout kills the plugin) takes its call
with it, as it would without a server: the kernel signals the worker (SIGIO, whose default
action ends the process) when the connection closes, and the call stops where it is, like a
killed standalone plugin, which DEL and the stores are built to clean up after.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cni_bridge.net.netns import CLONE_NEWNET
from cni_bridge.serve import wire
from cni_bridge.serve.server.peer import Call

CLONE_NEWNS = 0x00020000
# How a worker ends (its exit status, read by the server when it reaps it). Killed by SIGIO:
# its caller went away mid-call. Anything else: the worker died, the caller got code 11.
EXIT_SERVED = 0  # the result was sent
EXIT_REFUSED = 3  # refused before accepting: the caller ran the call itself
EXIT_NO_REQUEST = 4  # accepted, but no request came (the caller went away): nothing ran
EXIT_UNDELIVERED = 5  # the call ran; its caller was gone when the result was ready


@dataclass(frozen=True)
class CallRequest:
    argv0: str
    environ: Mapping[str, str]
    stdin: bytes | None
    stdin_error: str | None
    umask: int

    @classmethod
    def parse(cls, frame: Any) -> CallRequest:
        """The REQUEST frame, checked field by field."""
        if not (isinstance(frame, tuple) and len(frame) == 2 and frame[0] == wire.REQUEST
                and isinstance(frame[1], dict)):
            raise wire.ProtocolError("not a request")
        body = frame[1]
        environ = body.get("environ")
        if not isinstance(environ, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in environ.items()):
            raise wire.ProtocolError("request environ is not a dict of strings")
        argv0, stdin, error, umask = (body.get(k) for k in ("argv0", "stdin", "stdin_error",
                                                             "umask"))
        if not (isinstance(argv0, str) and isinstance(stdin, bytes | None)
                and isinstance(error, str | None) and type(umask) is int):
            raise wire.ProtocolError("request fields have the wrong types")
        return cls(argv0, environ, stdin, error, umask & 0o777)

    def read_stdin(self) -> bytes:
        """What the dispatcher reads: the caller's stdin, or the error reading it raised."""
        if self.stdin is None:
            raise OSError(self.stdin_error or "stdin could not be read")
        return self.stdin


def enter_caller(fds: Sequence[int], setns: Callable[[int, int], None]) -> None:
    """Into the caller's mount and network namespaces, root and cwd; its stderr on fd 2."""
    net, mnt, root, cwd, stderr = fds
    setns(mnt, CLONE_NEWNS)  # allowed: a forked worker has one thread
    setns(net, CLONE_NEWNET)
    os.fchdir(root)
    os.chroot(".")
    os.fchdir(cwd)
    sys.stderr.flush()
    os.dup2(stderr, 2)


def forget_server() -> None:
    """Drop what this process has of the server's that a call must not see: its environment
    and its logging handlers. The call writes its diagnostics through ``diag`` (configured by
    the call, to the caller's stderr); nothing it may log through the logging module goes out
    in the server's format and level. Idempotent, and a spare does it while it waits (~0.4 ms
    of first writes to memory shared with the server)."""
    os.environ.clear()
    signal.signal(signal.SIGIO, signal.SIG_DFL)  # see end_with_caller
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def adopt(request: CallRequest) -> None:
    """This process's environment, umask and argv[0] become the caller's (after
    forget_server())."""
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
    """Serve one call on `conn`; returns the worker's exit status (EXIT_*). `timeline`: when
    the server accepted the connection, had the HELLO and forked (the call log's timeline)."""
    timeline = {} if timeline is None else timeline
    conn.setblocking(True)
    try:
        enter_caller(fds, setns)
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot enter the caller's namespaces: %s", exc)
        wire.send_quietly(conn, (wire.REFUSE, f"cannot enter the caller's namespaces: {exc}"))
        return EXIT_REFUSED
    finally:
        for fd in fds:
            os.close(fd)
    timeline["entered"] = time.time()
    try:
        wire.send(conn, (wire.ACCEPT,))
        request = CallRequest.parse(wire.recv(conn))
    except (OSError, EOFError, wire.ProtocolError):
        return EXIT_NO_REQUEST
    timeline["request"] = time.time()
    forget_server()
    end_with_caller(conn, True)
    adopt(request)
    from cni_bridge.call import execute_call

    out = execute_call(call.role, request.environ, request.read_stdin, True, timeline)
    if out.stderr:
        sys.stderr.write(out.stderr)
    sys.stderr.flush()
    try:
        end_with_caller(conn, False)
        wire.send(conn, (wire.RESULT, out.exit_code, out.stdout))
    except OSError:
        return EXIT_UNDELIVERED
    return EXIT_SERVED

