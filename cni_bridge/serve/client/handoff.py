"""The hand-off: a plugin call given to a running ``cni-bridge serve`` instead of run here.

Called by ``build/rthooks/pyi_rth_cni_bridge_handoff.py`` before anything else is imported
(builtin modules only); ``build/bootloader/cni_handoff.c`` does the same in C, this one serves
PyInstaller's own bootloader and non-UTF-8 environments. `main` returns (the call runs here) only
while nothing of the request is sent; from then on the call is the server's: without a result
this process prints a CNI error (code 11), never running the call twice (README, Resident mode).
"""

from __future__ import annotations

import _socket
import os
import sys

from cni_bridge import MAX_STDIN, PLUGIN_ROLES
from cni_bridge.serve import wire

TYPE_CHECKING = False  # typing itself is not imported: it costs a plugin's start-up
if TYPE_CHECKING:
    from typing import Any, NoReturn

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def target(argv0: str, environ: Any, digest: str | None) -> str | None:
    """The socket to try for this call (frozen build, plugin role, served verb), or None."""
    if digest is None or os.path.basename(argv0) not in PLUGIN_ROLES or \
            environ.get("CNI_COMMAND") not in wire.SERVED_VERBS:
        return None
    return wire.socket_path(environ)


def open_call_fds() -> list[int] | None:
    """This process's network and mount namespaces, root, cwd and stderr (wire.CALL_FDS)."""
    fds: list[int] = []
    try:
        for path in ("/proc/self/ns/net", "/proc/self/ns/mnt"):
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        fds.append(os.open("/", _DIR_FLAGS))
        fds.append(os.open(".", _DIR_FLAGS))
        try:
            os.fstat(2)
            fds.append(os.dup(2))
        except OSError:  # no stderr: the call's warnings go nowhere, as they would here
            fds.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
    except OSError:
        close_all(fds)
        return None
    return fds


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:  # noqa: SIM105 (contextlib is not imported here)
            os.close(fd)
        except OSError:
            pass


def connect(path: str) -> Any:
    """A connection to the server, or None (no server: the usual case costs one syscall)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(wire.HELLO_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def introduce(sock: Any, digest: str, role: str, verb: str) -> bool:
    """Send the CALL with this process's descriptors; False: the call runs here."""
    fds = open_call_fds()
    if fds is None:
        return False
    try:
        wire.send(sock, wire.CALL, digest, role, verb, fds=fds)
        answer = wire.recv(sock, wire.MAX_HELLO)
    except Exception:  # a dead server, a slow one, garbage: run the call here
        return False
    finally:
        close_all(fds)
    return answer.kind == wire.ACCEPT


def read_stdin() -> tuple[bytes | None, str | None]:
    """Stdin up to one byte over the dispatcher's limit (it refuses more), or the error."""
    chunks: list[bytes] = []
    left = MAX_STDIN + 1
    try:
        while left > 0:
            chunk = os.read(0, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        return None, str(exc)
    return b"".join(chunks), None


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def went_away(why: str) -> NoReturn:
    """The request was sent and no result came: say so, never run the call here."""
    from cni_bridge.cni.errors import TryAgainError

    error = TryAgainError(
        "the resident cni-bridge server went away during the call; it may or may not have "
        "taken effect: try again", why)
    try:
        write_all(1, error.to_json().encode())
    finally:
        os._exit(1)


def hand_over(sock: Any) -> NoReturn:
    stdin, stdin_error = read_stdin()
    environ = [f"{name}={value}" for name, value in os.environ.items()]
    try:
        sock.settimeout(None)
        wire.send(sock, wire.REQUEST, sys.argv[0], current_umask(), stdin_error or "",
                  stdin or b"", *environ)
        answer = wire.recv(sock)
        if answer.kind != wire.RESULT:
            raise ValueError(f"unexpected answer {answer.kind!r}")
        code, stdout = answer.number(0), answer.field(1)
    except Exception as exc:
        went_away(f"{type(exc).__name__}: {exc}")
    try:
        write_all(1, stdout)
    except OSError:
        os._exit(1)
    os._exit(code)


def main() -> None:
    argv0 = sys.argv[0] if sys.argv else ""
    digest = wire.build_digest()
    path = target(argv0, os.environ, digest)
    sock = connect(path) if path is not None else None
    if sock is None or digest is None:
        return
    if introduce(sock, digest, os.path.basename(argv0), os.environ["CNI_COMMAND"]):
        hand_over(sock)
    sock.close()
