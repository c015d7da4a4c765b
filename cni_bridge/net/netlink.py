"""``Netlink``: one rtnetlink socket bound to one network namespace.

A namespace's socket is created while the calling thread is briefly setns'd into it; all later
requests go through the socket, so the process never stays in a foreign namespace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from types import TracebackType
from typing import Any, Protocol, TypeVar

from cni_bridge.cni.errors import CniError
from cni_bridge.net._codec import Codec, RtnlSocket, codec
from cni_bridge.net.errors import describe_errno, op_error
from cni_bridge.net.netns import NetnsHandle, enter_netns
from cni_bridge.netlink import NETLINK_ROUTE, Subscription, subscribe

T = TypeVar("T")

# Upper bound on the pause between two state reads while waiting: events wake us earlier, this
# only covers a missed event (an ENOBUFS overflow, or a change that sends none).
_MAX_POLL_INTERVAL = 0.1


class RequestSocket(Protocol):
    """What ``Netlink`` needs from its socket (``RtnlSocket``; a fake in unit tests)."""

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]: ...

    def close(self) -> None: ...


class Netlink:
    """An rtnetlink socket in one namespace. Use as a context manager, or call ``close()``.

    One request at a time: do not share an instance between threads. ``call``, ``codec``,
    ``events`` and ``wait_for`` are for the operation modules of this package, not for plugins.
    """

    def __init__(self, sock: RequestSocket, netns: NetnsHandle | None) -> None:
        self._sock = sock
        self._netns = netns
        self._closed = False

    @classmethod
    def for_current(cls) -> Netlink:
        return cls(_open_in(None, RtnlSocket), None)

    @classmethod
    def for_netns(cls, netns: NetnsHandle) -> Netlink:
        """A socket in ``netns`` (the handle stays owned by the caller and must outlive this)."""
        return cls(_open_in(netns, RtnlSocket), netns)

    @property
    def netns(self) -> NetnsHandle | None:  # None: the caller's own namespace
        return self._netns

    @property
    def where(self) -> str:
        if self._netns is None:
            return "the current network namespace"
        return f'network namespace "{self._netns.path}"'

    @property
    def codec(self) -> Codec:
        return codec()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(
        self, what: str, msg: Any, msg_type: int, flags: int = 0, tolerate: Iterable[int] = ()
    ) -> list[Any] | None:
        """Send one request; translate a failure into a CniError naming ``what``.

        Returns the replies, or None when the kernel answered with an errno in ``tolerate``.
        """
        try:
            return self._sock.request(msg, msg_type, flags)
        except OSError as exc:
            if exc.errno in tuple(tolerate):
                return None
            raise op_error(what, exc) from None

    @contextmanager
    def events(self, groups: int) -> Iterator[Subscription]:
        sock = _open_in(self._netns, subscribe, NETLINK_ROUTE, groups)
        try:
            yield sock
        finally:
            sock.close()

    def wait_for(self, groups: int, probe: Callable[[], T | None], timeout: float) -> T | None:
        """Re-run ``probe`` on every event in ``groups`` until it returns non-None or time is up.

        Subscribes before the first probe, so a change between the probe and the wait is never
        missed. Returns the probe's last non-None value, or None on timeout.
        """
        deadline = time.monotonic() + timeout
        with self.events(groups) as ev:
            while True:
                result = probe()
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if ev.wait(min(left, _MAX_POLL_INTERVAL)):
                    ev.drain()  # what came is only a wake-up: the probe reads the state


S = TypeVar("S")


def _open_in(netns: NetnsHandle | None, factory: Callable[..., S], *args: Any) -> S:
    where = "" if netns is None else f' in network namespace "{netns.path}"'
    with nullcontext() if netns is None else enter_netns(netns):
        try:
            return factory(*args)
        except OSError as exc:
            raise CniError(f"cannot open a netlink socket{where}: {describe_errno(exc)}") from None
