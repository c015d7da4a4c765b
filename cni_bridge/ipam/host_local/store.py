"""The reservation store: its on-disk layout, owners, and the interface allocation talks to.

The layout is the reference host-local's and must never change (a live node may switch between
the two either way): ``<dataDir>/<network>/<ip>`` per reservation, named by the address in Go's
canonical text and holding ``<containerID>\\r\\n<ifname>`` (legacy: the ID only);
``last_reserved_ip.<N>``, the cursor of range set N; ``lock``, flocked around every scan+change.
Names that are not canonical addresses (lock, cursors, our ``TEMP_PREFIX`` files) are never
reservations: the reference takes the address from the name.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from contextlib import AbstractContextManager
from ipaddress import ip_address
from typing import NamedTuple, Protocol, TypeVar

from cni_bridge.cni.result import IPAddress

LOCK_FILE = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
TEMP_PREFIX = ".cni-bridge-tmp-"
DIR_MODE = 0o755
FILE_MODE = 0o600
LOCK_MODE = 0o750
_GO_SPACE = b" \t\n\v\f\r"


class Owner(NamedTuple):
    """``ifname`` None: a legacy file. A tuple: 1,000 reservations build 1,000 per call."""

    container_id: str
    ifname: str | None

    def describe(self) -> str:
        if not self.container_id:
            return "an empty or unreadable reservation file"
        if self.ifname is None:
            return f"container {self.container_id} (legacy reservation without ifname)"
        return f"container {self.container_id} ifname {self.ifname}"


def encode_owner(owner: Owner) -> bytes:
    """The exact bytes the reference writes (no trailing newline)."""
    if owner.ifname is None:
        return owner.container_id.strip().encode()
    return f"{owner.container_id.strip()}{LINE_BREAK}{owner.ifname}".encode()


def decode_owner(data: bytes) -> Owner:
    """Read leniently, like the reference: surrounding whitespace is ignored."""
    text = data.strip(_GO_SPACE).decode("utf-8", "surrogateescape")
    if LINE_BREAK in text:
        container_id, ifname = text.split(LINE_BREAK, 1)
        return Owner(container_id, ifname)
    return Owner(text, None)


def reservation_ip(name: str) -> IPAddress | None:
    """The address a file name stands for, or None when the name is not a canonical address."""
    if "%" in name:
        return None
    try:
        ip = ip_address(name)
    except ValueError:
        return None
    return ip if str(ip) == name else None


class TakenNames:
    """Answers ``in`` from file names: no address objects for the thousands not asked about."""

    __slots__ = ("_names",)

    def __init__(self, names: Container[str]) -> None:
        self._names = names

    def __contains__(self, ip: object) -> bool:
        return str(ip) in self._names


def addresses_named(names: list[str]) -> list[IPAddress]:
    """The reservations among `names` (cursors, lock and temporaries are not)."""
    return [ip for ip in map(reservation_ip, names) if ip is not None]


# What reservations are keyed by: addresses (an in-memory store) or file names (FileStore).
Key = TypeVar("Key")


def owned_by(items: Iterable[tuple[Key, Owner]], container_id: str, ifname: str) -> list[Key]:
    """Exact (ID, ifname) matches; only when there are none, the legacy (ID-only) files."""
    exact, legacy = match_owner(items, container_id, ifname)
    return exact or legacy


def owned_or_legacy(
    items: Iterable[tuple[Key, Owner]], container_id: str, ifname: str
) -> list[Key]:
    """Exact and legacy matches together (the reference's duplicate-allocation check)."""
    exact, legacy = match_owner(items, container_id, ifname)
    return exact + legacy


def match_owner(
    items: Iterable[tuple[Key, Owner]], container_id: str, ifname: str
) -> tuple[list[Key], list[Key]]:
    """(exact matches, legacy matches) of an attachment among (address or name, owner) pairs."""
    cid = container_id.strip()
    exact: list[Key] = []
    legacy: list[Key] = []
    for ip, owner in items:
        if owner.container_id == cid:
            if owner.ifname == ifname:
                exact.append(ip)
            elif owner.ifname is None:
                legacy.append(ip)
    return exact, legacy


def sort_ips(ips: Iterator[IPAddress] | list[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(sorted(ips, key=lambda ip: (ip.version, int(ip))))


class Store(Protocol):
    """Every call but ``locked`` (re-entrant) and ``addresses_held`` needs ``store.locked()``.
    The queries are narrow so a store need not decode every reservation."""

    def locked(self) -> AbstractContextManager[None]: ...

    def reservations(self) -> dict[IPAddress, Owner]: ...

    def holder(self, ip: IPAddress) -> Owner | None: ...

    def taken(self) -> Container[IPAddress]:
        """Every reserved address (a live view: later reservations show in it)."""

    def held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """``owned_by``: exact matches, else legacy ones."""

    def held_or_legacy(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """Exact and legacy matches together (``owned_or_legacy``)."""

    def reserve(self, ip: IPAddress, owner: Owner, set_index: int) -> bool:
        """Atomic; False if taken. On success the cursor of ``set_index`` moves to ``ip``."""

    def release(self, ip: IPAddress) -> None:
        """Remove the reservation; an absent one is not an error."""

    def last_reserved(self, set_index: int) -> IPAddress | None: ...

    def addresses_held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """Takes the lock itself."""
