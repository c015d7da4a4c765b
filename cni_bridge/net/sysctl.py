"""Sysctls under /proc/sys: read, and set only when different (never fatal when already right).

With ``netns`` given, the file is opened inside it (``enter_netns``: /proc/sys/net follows the
opening thread's namespace) and read/written from home. Keys are ``net.ipv4.ip_forward`` or
``net/ipv4/ip_forward``: the slash form when a component (``cni0.100``) contains a dot.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os

from cni_bridge.net.errors import SysctlError, describe_errno
from cni_bridge.net.netns import NetnsHandle, enter_netns

PROC_SYS = "/proc/sys"
_IPV6_ROOT = "net/ipv6"
_READONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class SysctlOutcome(enum.Enum):
    UNCHANGED = "unchanged"  # already had the value: nothing written
    WRITTEN = "written"
    SKIPPED = "skipped"  # an IPv6 sysctl on a system (or namespace) without IPv6


def sysctl_relpath(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``net/ipv4/ip_forward``; validated (no empty, ``.`` or ``..``)."""
    rel = key if "/" in key else key.replace(".", "/")
    parts = rel.split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid sysctl key {key!r}")
    return rel


def display_key(key: str) -> str:
    """The dotted form used by sysctl(8), or the slash form when a component has a dot."""
    rel = sysctl_relpath(key)
    return rel if any("." in part for part in rel.split("/")) else rel.replace("/", ".")


def _is_ipv6_key(rel: str) -> bool:
    return rel == _IPV6_ROOT or rel.startswith(_IPV6_ROOT + "/")


def _open(key: str, netns: NetnsHandle | None, writable: bool) -> tuple[int, str] | None:
    """Open the sysctl file in ``netns``, read-write if ``writable`` and allowed.

    Returns (fd, why it is not writable: "" if it is), or None for an absent IPv6 sysctl.
    """
    rel = sysctl_relpath(key)
    path = f"{PROC_SYS}/{rel}"
    denied = "opened read-only"
    with contextlib.nullcontext() if netns is None else enter_netns(netns):
        try:
            if writable:
                try:
                    return os.open(path, os.O_RDWR | os.O_CLOEXEC), ""
                except OSError as exc:
                    if exc.errno not in _READONLY_ERRNOS:
                        raise
                    denied = describe_errno(exc)
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC), denied
        except FileNotFoundError:
            if _is_ipv6_key(rel) and not os.path.isdir(f"{PROC_SYS}/{_IPV6_ROOT}"):
                return None
            raise SysctlError(
                key, f"sysctl {display_key(key)} does not exist{_where(netns)}"
            ) from None
        except OSError as exc:
            raise SysctlError(
                key, f"cannot open sysctl {display_key(key)}{_where(netns)}: {describe_errno(exc)}"
            ) from None


def _where(netns: NetnsHandle | None) -> str:
    return "" if netns is None else f' in network namespace "{netns.path}"'


def _read(fd: int, key: str, netns: NetnsHandle | None) -> str:
    try:
        return os.pread(fd, 4096, 0).decode().strip()
    except OSError as exc:
        raise SysctlError(
            key, f"cannot read sysctl {display_key(key)}{_where(netns)}: {describe_errno(exc)}"
        ) from None


def get_sysctl(key: str, *, netns: NetnsHandle | None = None) -> str | None:
    """The sysctl's value (stripped); None for an IPv6 sysctl where IPv6 is absent."""
    opened = _open(key, netns, writable=False)
    if opened is None:
        return None
    fd, _ = opened
    try:
        return _read(fd, key, netns)
    finally:
        os.close(fd)


def _same(current: str, wanted: str) -> bool:
    return current.split() == wanted.split()  # multi-value sysctls are tab-separated


def ensure_sysctl(key: str, value: str | int, *, netns: NetnsHandle | None = None) -> SysctlOutcome:
    """Set the sysctl to ``value`` unless it already has it (read first, even on read-only /proc).

    IPv6 sysctls are SKIPPED where IPv6 is absent. A wrong value that cannot be written raises
    SysctlError naming the sysctl, the wanted and the current value.
    """
    wanted = str(value)
    opened = _open(key, netns, writable=True)
    if opened is None:
        return SysctlOutcome.SKIPPED
    fd, denied = opened
    try:
        current = _read(fd, key, netns)
        if _same(current, wanted):
            return SysctlOutcome.UNCHANGED
        if denied:
            raise SysctlError(key, _cannot_set(key, wanted, current, netns, denied))
        try:
            os.pwrite(fd, wanted.encode(), 0)
        except OSError as exc:
            raise SysctlError(
                key, _cannot_set(key, wanted, current, netns, describe_errno(exc))
            ) from None
        return SysctlOutcome.WRITTEN
    finally:
        os.close(fd)


def _cannot_set(key: str, wanted: str, current: str, netns: NetnsHandle | None, why: str) -> str:
    return (
        f"cannot set sysctl {display_key(key)} to {wanted}{_where(netns)} "
        f"(currently {current}): {why}"
    )
