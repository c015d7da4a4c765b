"""The hand-off: a plugin call given to a running ``cni-bridge serve`` instead of run here.

The run-time hook ``build/rthooks/pyi_rth_cni_bridge_handoff.py`` calls `main` before anything
else is imported; builtin modules only, until the call is over. The bootloader of our build does
the same earlier, in C, before the interpreter starts (``build/bootloader/cni_handoff.c``, same
protocol and rules); this one serves builds with PyInstaller's own bootloader and environments
the C side leaves alone (not UTF-8). Rules:

- Only a frozen build (it has a build digest), a plugin role, a verb that does work (ADD, DEL,
  CHECK, GC, STATUS; VERSION and anything else run here) and a socket (CNI_BRIDGE_SOCKET,
  default /run/cni-bridge/serve.sock; empty: never).
- `main` returns, and the call runs here as if there were no server, only while nothing of the
  call has been sent: no socket, no answer in time, a refusal (other build, other user or PID
  namespace), an error before the server accepted.
- From the first byte of the request on, the call belongs to the server. Whatever happens then
  (the server's worker killed, a reset), this process prints one CNI error (code 11) and exits
  non-zero: a call is never run twice.
"""

from __future__ import annotations

import _socket
import os
import sys

from cni_bridge.serve.wire import (
    ACCEPT,
    CALL,
    HELLO,
    HELLO_TIMEOUT,
    MAX_HELLO,
    MAX_STDIN,
    PLUGIN_ROLES,
    PROTOCOL,
    REQUEST,
    RESULT,
    SERVED_VERBS,
    build_digest,
    recv,
    send,
    socket_path,
)

TYPE_CHECKING = False  # typing itself is not imported: it costs a plugin's start-up
if TYPE_CHECKING:
    from typing import Any, NoReturn

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def target(argv0: str, environ: Any, digest: str | None) -> str | None:
    """The socket to try for this call, or None: run it here."""
    if digest is None or os.path.basename(argv0) not in PLUGIN_ROLES:
        return None
    if environ.get("CNI_COMMAND") not in SERVED_VERBS:
        return None
    return socket_path(environ)


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
    sock.settimeout(HELLO_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def introduce(sock: Any, hello: tuple[Any, ...]) -> bool:
    """Send the HELLO with this process's descriptors; whether the server accepted the call.
    Nothing of the call itself is sent yet: on False the call runs here."""
    fds = open_call_fds()
    if fds is None:
        return False
    try:
        send(sock, hello, fds)
        answer = recv(sock, MAX_HELLO)
    except Exception:  # a dead server, a slow one, garbage: run the call here
        return False
    finally:
        close_all(fds)
    return bool(answer == (ACCEPT,))


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
    """Send the call, wait for its result, print it and exit with its status."""
    stdin, stdin_error = read_stdin()
    request = {"argv0": sys.argv[0], "environ": dict(os.environ), "stdin": stdin,
               "stdin_error": stdin_error, "umask": current_umask()}
    try:
        sock.settimeout(None)
        send(sock, (REQUEST, request))
        kind, code, stdout = recv(sock)
        if kind != RESULT or type(code) is not int or type(stdout) is not bytes:
            raise ValueError(f"unexpected answer {kind!r}")
    except Exception as exc:
        went_away(f"{type(exc).__name__}: {exc}")
    try:
        write_all(1, stdout)
    except OSError:
        os._exit(1)
    os._exit(code)


def main() -> None:
    """Hand this process's call over and exit, or return to run it here."""
    argv0 = sys.argv[0] if sys.argv else ""
    digest = build_digest()
    path = target(argv0, os.environ, digest)
    sock = connect(path) if path is not None else None
    if sock is None:
        return
    hello = (HELLO, PROTOCOL, CALL, digest, os.path.basename(argv0), os.environ["CNI_COMMAND"])
    if introduce(sock, hello):
        hand_over(sock)
    sock.close()
