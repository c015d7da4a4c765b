"""Who owns a namespace's state directory: the primitives every plugin call needs, importing
only the standard library's C modules (``records`` and ``node.state`` use them)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

STATE_ENV = "CNI_BRIDGE_STATE_DIR"
DEFAULT_ROOT = "/run/cni-bridge"
TEMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
SO_NETNS_COOKIE = 71  # <asm-generic/socket.h>, Linux 5.14


def state_base(environ: Mapping[str, str] | None = None) -> str:
    """The state root shared by every namespace (host-local's index lives here too)."""
    env = os.environ if environ is None else environ
    return env.get(STATE_ENV) or DEFAULT_ROOT


def netns_cookie() -> int | None:
    """The network namespace cookie of the calling thread (unique for the boot, never reused):
    a socket belongs to the namespace it is made in. None on kernels before 5.14."""
    import _socket  # the C module: `socket` would add imports to a call that lacks them

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        raw = sock.getsockopt(_socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return None
    finally:
        sock.close()
    return int.from_bytes(raw, sys.byteorder)


def read_small(path: str) -> str | None:
    """A small text file's content, or None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 512).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def owner_text(cookie: int | None, boot_id: str) -> str:
    """The owner file's content (parsed back by ``node.state.parse_owner``)."""
    return f"netns-cookie {'unavailable' if cookie is None else cookie}\nboot-id {boot_id}\n"


def current_owner() -> str:
    """The owner file the calling namespace writes, in this boot."""
    return owner_text(netns_cookie(), (read_small(BOOT_ID_FILE) or "unknown").strip())
