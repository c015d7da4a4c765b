"""Network namespace handles, and running a short piece of code inside one.

A namespace is only ever *opened* (``O_RDONLY``), never created: a DEL whose namespace is gone must
not bring one back. ``enter_netns`` moves only the calling thread (``setns(2)``) and always moves it
back; it is used to create sockets and open /proc/sys files, which stay bound to the namespace they
were created in after the thread returns (verified: a /proc/sys/net file opened while setns'd into
a namespace reads and writes that namespace's value after the thread is back home).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import NoReturn

from cni_bridge.cni.errors import INVALID_NETNS, CniError
from cni_bridge.net.errors import NetnsNotFound, describe_errno

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): which kind of namespace an nsfs file is
_SELF_NETNS = "/proc/thread-self/ns/net"  # the calling *thread's* namespace, not the leader's
_INIT_NETNS = "/proc/1/ns/net"

_setns_impl: Callable[[int, int], None] | None = None


class NetnsHandle:
    """An open network namespace file. Close it (or use it as a context manager) when done."""

    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd = fd

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f'network namespace handle for "{self._path}" is closed')
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> NetnsHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_netns(path: str) -> NetnsHandle:
    """Open (never create) the network namespace at ``path``; NetnsNotFound if it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(path) from None
    except OSError as exc:
        raise CniError(f'cannot open network namespace "{path}": {describe_errno(exc)}') from None
    try:
        _check_is_netns(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return NetnsHandle(path, fd)


def _check_is_netns(path: str, fd: int) -> None:
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            raise CniError(f'"{path}" is not a network namespace') from None
        raise CniError(f'cannot inspect namespace "{path}": {describe_errno(exc)}') from None
    if nstype != CLONE_NEWNET:
        raise CniError(f'"{path}" is a namespace but not a network namespace')


def refuse_host_netns(path: str) -> None:
    """Refuse (code 8) a CNI_NETNS that is the plugin's own namespace or the machine's (PID 1's):
    configuring it, or deleting CNI_IFNAME in it, would change the host instead of a container.
    PID 1's namespace is skipped when it cannot be looked at (no permission)."""
    target = _identity(path)
    if target == _identity_of(_SELF_NETNS):
        _refuse(path, "the plugin's own")
    try:
        machine = _identity_of(_INIT_NETNS)
    except OSError:
        return
    if target == machine:
        _refuse(path, "the machine's")


def _refuse(path: str, whose: str) -> NoReturn:
    raise CniError(f"refusing to use {whose} network namespace as a container's",
                   f"CNI_NETNS={path}", code=INVALID_NETNS)


def _identity(path: str) -> tuple[int, int]:
    """(device, inode) of the namespace file at `path`; NetnsNotFound if there is none."""
    try:
        return _identity_of(path)
    except FileNotFoundError:
        raise NetnsNotFound(path) from None
    except OSError as exc:
        raise CniError(f'cannot stat network namespace "{path}": {describe_errno(exc)}') from None


def _identity_of(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _setns(fd: int, nstype: int) -> None:
    load_setns()(fd, nstype)


def load_setns() -> Callable[[int, int], None]:
    """The setns(2) implementation, resolved once (~0.25 ms through ctypes): the resident
    server resolves it before forking its workers."""
    global _setns_impl
    if _setns_impl is None:
        _setns_impl = _load_setns()
    return _setns_impl


def _load_setns() -> Callable[[int, int], None]:
    native = getattr(os, "setns", None)  # Python >= 3.12
    if native is not None:
        return native  # type: ignore[no-any-return]
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc_setns = libc.setns

    def setns(fd: int, nstype: int) -> None:
        if libc_setns(fd, nstype) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return setns


@contextmanager
def enter_netns(netns: NetnsHandle) -> Iterator[None]:
    """Run the body with the calling thread in ``netns``; always return to where it was.
    Keep the body short (create a socket, open a file): anything else would act in ``netns``."""
    home = os.open(_SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(netns.fileno(), CLONE_NEWNET)
        except OSError as exc:
            raise CniError(
                f'cannot enter network namespace "{netns.path}": {describe_errno(exc)}'
            ) from None
        try:
            yield
        finally:
            try:
                _setns(home, CLONE_NEWNET)
            except OSError as exc:
                raise CniError(
                    f'cannot return from network namespace "{netns.path}": {describe_errno(exc)}'
                ) from None
    finally:
        os.close(home)
