"""Errors raised by the netlink layer; all are CniError, so they reach the runtime as CNI errors.

Hierarchy::

    CniError
     ├── NetnsNotFound          -- a namespace path that does not exist (never created by us)
     ├── NetlinkOpError(errno)  -- a kernel request failed; ``errno`` for callers that branch
     │    └── LinkNotFound      -- ENODEV / no interface by that name or index
     ├── SysctlError            -- a sysctl could not be read or set to the wanted value
     └── WaitTimeout            -- a bounded wait (oper-UP, IPv6 DAD) ended without success

Every message names the object (interface, address, route, namespace path, sysctl); the kernel's
extended-ack text, when it gave one, goes to ``details``.
"""

from __future__ import annotations

import errno as _errno
import os

from cni_bridge.cni.errors import CniError


class NetnsNotFound(CniError):
    """The network namespace path does not exist."""

    def __init__(self, path: str) -> None:
        super().__init__(f'network namespace "{path}" does not exist')
        self.path = path


class NetlinkOpError(CniError):
    """A netlink request failed; ``errno`` is the kernel's error number (0 if not from errno)."""

    def __init__(self, msg: str, details: str = "", errno: int = 0) -> None:
        super().__init__(msg, details)
        self.errno = errno


class LinkNotFound(NetlinkOpError):
    """No interface by that name or index in the namespace asked."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, errno=_errno.ENODEV)


class SysctlError(CniError):
    """A sysctl was unreadable, or could not be set to the wanted value."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key = key


class WaitTimeout(CniError):
    """A bounded wait ended before the kernel reported the awaited state."""


def describe_errno(exc: OSError) -> str:
    """``strerror`` for an OSError, tolerating ones built without an errno."""
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def op_error(what: str, exc: OSError) -> NetlinkOpError:
    """Translate a failed kernel call into a NetlinkOpError: ``"<what>: <strerror>"``."""
    details = getattr(exc, "extack", "") or ""
    code = exc.errno or 0
    msg = f"{what}: {describe_errno(exc)}"
    if code == _errno.ENODEV:
        err: NetlinkOpError = LinkNotFound(msg)
        err.details = details
        return err
    return NetlinkOpError(msg, details, code)
