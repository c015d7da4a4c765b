"""A worker forked before its call: the fork (~1.5 ms for the server's image) is paid between
calls instead of during one.

Each spare waits on its end of a socket pair for one message: role, verb, the timeline so far,
and the connection with the caller's descriptors (SCM_RIGHTS); it then is that call's worker,
exactly as one forked for it. A failed hand-over (the spare died) leaves the call to a worker
forked for it.
"""

from __future__ import annotations

import errno
import marshal
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from cni_bridge.serve import wire
from cni_bridge.serve.server.peer import Call
from cni_bridge.serve.server.view import EXIT_FAILED

_FDS = len(wire.CALL_FDS) + 1  # the connection, then the caller's descriptors
_MADV_POPULATE_WRITE = 23
PREFAULT_LIMIT = 64 << 20  # at most this much of a spare's memory is made its own in advance
_MAX_MESSAGE = 1024


class Spare:
    """The server's side of one spare worker."""

    def __init__(self, pid: int, ctl: socket.socket) -> None:
        self.pid, self.ctl = pid, ctl

    def hand(self, conn: socket.socket, fds: list[int], call: Call,
             timeline: dict[str, float]) -> bool:
        """False: the spare cannot take the call (then fork a worker)."""
        message = marshal.dumps((call.role, call.verb, timeline))
        try:
            return socket.send_fds(self.ctl, [message], [conn.fileno(), *fds]) == len(message)
        except OSError:
            return False
        finally:
            self.close()

    def close(self) -> None:
        self.ctl.close()


def fork(become_child: Callable[[], None], serve: Callable[[socket.socket], int]) -> Spare:
    """In the child, `become_child()` then `serve(its end)`, exiting with its status."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        code = EXIT_FAILED
        try:
            ours.close()
            become_child()
            code = serve(theirs)
        finally:
            os._exit(code)
    theirs.close()
    return Spare(pid, ours)


def prefault(limit: int = PREFAULT_LIMIT) -> int:
    """In a spare, while it waits: give it its own copy of the memory it shares with the server
    (madvise MADV_POPULATE_WRITE, Linux 5.14+, on each private writable mapping the server has
    pages in), so that the call does not stop at each first write to a shared page. Measured
    (bridge STATUS, source tree): ~700 such faults and ~2.5 ms of a 3 ms call, gone at the cost
    of ~15 MiB per spare. Returns the bytes populated."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for start, end in _resident_writable():
        if done + end - start > limit:
            break
        if madvise(start, end - start, _MADV_POPULATE_WRITE) == 0:
            done += end - start
        elif ctypes.get_errno() == errno.EINVAL and done == 0:
            return 0  # a kernel before 5.14: nothing to gain here
    return done


def _resident_writable() -> list[tuple[int, int]]:
    """Private writable mappings with resident pages (/proc/self/smaps)."""
    found: list[tuple[int, int]] = []
    region: tuple[int, int] | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(None, 2)
            if "-" in head[0] and len(head) > 1 and len(head[1]) == 4:
                low, high = head[0].split("-")
                region = (int(low, 16), int(high, 16)) if head[1][1] == "w" and \
                    head[1][3] == "p" else None
            elif region is not None and head[0] == "Rss:" and int(head[1]) > 0:
                found.append(region)
                region = None
    return found


def receive(ctl: socket.socket) -> tuple[socket.socket, list[int], Call, dict[str, float]] | None:
    """In the spare: wait for a call. None when the server closed the pair or sent something
    unusable (its descriptors closed: the caller, given no ACCEPT, runs the call itself)."""
    try:
        message, fds, _flags, _addr = socket.recv_fds(ctl, _MAX_MESSAGE, _FDS)
    except OSError:
        return None
    finally:
        ctl.close()
    try:
        value: Any = marshal.loads(message)
        role, verb, timeline = value
        if len(fds) != _FDS or not (isinstance(role, str) and isinstance(verb, str)
                                    and isinstance(timeline, dict)):
            raise ValueError("not a hand-over")
    except (ValueError, EOFError, TypeError):  # EOFError: the server closed the pair
        for fd in fds:
            os.close(fd)
        return None
    timeline["worker"] = time.time()
    return socket.socket(fileno=fds[0]), fds[1:], Call(role, verb), timeline
