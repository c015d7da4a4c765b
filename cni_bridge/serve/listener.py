"""The server's socket: created 0600 in a 0700 directory, never stolen from a live server."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

BACKLOG = 128  # calls beyond the worker cap wait here (their HELLO times out into a local run)
# A socket file's identity: device, inode and change time. The inode alone is not enough: on a
# disk filesystem, the inode of a file unlinked by another server is reused at once.
Identity = tuple[int, int, int]


def identity(path: str) -> Identity:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


class ListenerError(Exception):
    """The socket cannot be set up; the message says why and what to do."""


def answers(path: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind(path: str) -> tuple[socket.socket, Identity]:
    """A listening, non-blocking socket at `path`, and the identity of its file.

    A socket file nobody answers on is a dead server's and is replaced; a live server's is not.
    """
    directory = Path(path).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenerError(f"{path} exists and is not a socket; remove it or pass --socket")
        if answers(path):
            raise ListenerError(f"a server already answers on {path}; stop it first "
                                "(cni-bridge status --server shows it)")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot bind {path}: {exc}") from None
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock, identity(path)


def remove(path: str, ours: Identity) -> None:
    """Unlink our socket file, unless another server has replaced it meanwhile."""
    with contextlib.suppress(OSError):
        if identity(path) == ours:
            os.unlink(path)
