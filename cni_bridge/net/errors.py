"""Errors of the netlink operations: all CniError, so they reach the runtime as CNI errors.

Every message names the object (interface, address, route, namespace path, sysctl); the kernel's
extended-ack text, when it gave one, goes to ``details``.
"""

from __future__ import annotations

import errno as _errno
import os

from cni_bridge.cni.errors import CniError


class NetnsNotFound(CniError):
    def __init__(self, path: str) -> None:
        super().__init__(f'network namespace "{path}" does not exist')
        self.path = path


class NetlinkOpError(CniError):
    """A netlink request failed; ``errno`` is the kernel's error number (0 if not from errno)."""

    def __init__(self, msg: str, details: str = "", errno: int = 0) -> None:
        super().__init__(msg, details)
        self.errno = errno


class LinkNotFound(NetlinkOpError):
    def __init__(self, msg: str) -> None:
        super().__init__(msg, errno=_errno.ENODEV)


class SysctlError(CniError):
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
    details = getattr(exc, "extack", "") or ""
    code = exc.errno or 0
    msg = f"{what}: {describe_errno(exc)}"
    if code == _errno.ENODEV:
        err: NetlinkOpError = LinkNotFound(msg)
        err.details = details
        return err
    return NetlinkOpError(msg, details, code)
