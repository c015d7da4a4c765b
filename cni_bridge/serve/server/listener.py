"""The server's socket: created 0600 in a 0700 directory, never stolen from a live server; or
the one systemd made for it (socket activation), which stays systemd's."""

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


# systemd's socket activation (sd_listen_fds(3)): the first passed descriptor, and the variables.
LISTEN_FDS_START = 3
ACTIVATION_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ServeError(Exception):
    """The server cannot start; the message says why and what to do."""


def answers(path: str, timeout: float = 1.0) -> bool:
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
    """A listening, non-blocking socket at `path`, and the identity of its file. A socket file
    nobody answers on is a dead server's and is replaced; a live server's is not."""
    directory = Path(path).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ServeError(f"{path} exists and is not a socket; remove it or pass --socket")
        if answers(path):
            raise ServeError(f"a server already answers on {path}; stop it first "
                             "(cni-bridge status --server shows it)")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot bind {path}: {exc}") from None
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock, identity(path)


def activation(environ: dict[str, str], pid: int) -> int | None:
    """The descriptor systemd passed us (LISTEN_PID is our pid), or None: not socket-activated.
    Pure: the caller clears the variables (so that nothing we start inherits them)."""
    if environ.get("LISTEN_PID") is None and environ.get("LISTEN_FDS") is None:
        return None
    if environ.get("LISTEN_PID", "") != str(pid):
        return None  # meant for another process (the one that exec'd us): not ours to take
    count = environ.get("LISTEN_FDS", "")
    if count != "1":
        raise ServeError(f"socket activation passed LISTEN_FDS={count!r}: the server takes "
                         "exactly one socket (ListenStream= once in cni-bridge.socket)")
    return LISTEN_FDS_START


def inherited(fd: int, path: str) -> socket.socket:
    """The socket systemd passed as `fd`, checked to listen at `path`."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ServeError(f"socket activation: descriptor {fd} is not a socket ({exc})") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        bound = sock.getsockname()
    except OSError as exc:
        listening, bound = 0, f"unreadable ({exc})"
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ServeError(f"socket activation: descriptor {fd} is not a listening unix "
                         "stream socket (cni-bridge.socket needs ListenStream=PATH)")
    if bound != path:
        sock.detach()
        raise ServeError(f"socket activation: the socket systemd passed is {bound!r}, not "
                         f"{path} (--socket); make them agree: plugins look at {path}")
    sock.setblocking(False)
    os.set_inheritable(fd, False)
    return sock


def take_activated(path: str) -> socket.socket | None:
    """The socket systemd listens on for us, if any; the activation variables go either way."""
    fd = activation(dict(os.environ), os.getpid())
    for name in ACTIVATION_ENV:
        os.environ.pop(name, None)
    return None if fd is None else inherited(fd, path)


def remove(path: str, ours: Identity | None) -> None:
    """Unlink our socket file, unless another server has replaced it meanwhile. None: the
    socket is systemd's (activation), never ours to remove."""
    if ours is None:
        return
    with contextlib.suppress(OSError):
        if identity(path) == ours:
            os.unlink(path)
