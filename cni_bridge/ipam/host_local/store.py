"""The reservation store: its on-disk layout, who holds an address, and the small interface the
allocation code talks to (implemented by ``FileStore``; the tests add an in-memory one).

On-disk layout -- shared with the reference host-local, so these names and formats must never
change (an operator can switch a live node between the two implementations in either direction):

    <dataDir>/<network>/<ip>        one file per reserved address, named by the address in Go's
                                    canonical text (``10.88.0.2``, ``fd00::2``), holding
                                    ``<containerID>\\r\\n<ifname>`` with no trailing newline;
                                    legacy files hold the container ID only
    <dataDir>/<network>/last_reserved_ip.<N>
                                    the round-robin cursor of range set N (an address)
    <dataDir>/<network>/lock        empty; ``flock(LOCK_EX)`` serialises every scan+change

Files whose names are not canonical addresses are never reservations: ``lock``, the cursors, and
our own temporary files (``TEMP_PREFIX``), which the reference's scans read but cannot mistake for
an address because it takes the address from the file name.
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
    """Who holds a reservation. ``ifname`` is None for a legacy file (container ID only).
    (A tuple: a store of 1,000 reservations builds 1,000 of them per call.)"""

    container_id: str
    ifname: str | None

    def describe(self) -> str:
        if not self.container_id:
            return "an empty or unreadable reservation file"
        if self.ifname is None:
            return f"container {self.container_id} (legacy reservation without ifname)"
        return f"container {self.container_id} ifname {self.ifname}"


def encode_owner(owner: Owner) -> bytes:
    """The exact bytes the reference writes: trimmed ID, CRLF, ifname, no trailing newline.
    (An owner without ifname gives a legacy file: the ID alone.)"""
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
    """The reserved addresses as a container, answered from file names (no address objects
    are built for the thousands not asked about)."""

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
    """What an attachment holds among (key, owner) pairs, with the reference's legacy fallback.

    Exact ``(container ID, ifname)`` matches first; only when there are none do files written
    before ifname was recorded (container ID only) count, whatever the ifname.
    (The one statement of this rule for both stores.)
    """
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
    """What allocation needs from storage. Every call but ``locked`` and ``addresses_held``
    must be made inside ``with store.locked():`` (``locked`` is re-entrant).

    The queries are narrow on purpose: a store may answer them without decoding every
    reservation (``reservations()`` itself is for GC and STATUS)."""

    def locked(self) -> AbstractContextManager[None]: ...

    def reservations(self) -> dict[IPAddress, Owner]: ...

    def holder(self, ip: IPAddress) -> Owner | None:
        """Who holds `ip`, if anyone."""
        ...

    def taken(self) -> Container[IPAddress]:
        """Every reserved address (a live view: later reservations show in it)."""
        ...

    def held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """What the attachment holds (``owned_by``: exact matches, else legacy ones)."""
        ...

    def held_or_legacy(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """Exact and legacy matches together (``owned_or_legacy``)."""
        ...

    def reserve(self, ip: IPAddress, owner: Owner, set_index: int) -> bool:
        """Create the reservation atomically; False if the address is already taken.
        On success the cursor of range set ``set_index`` moves to ``ip``."""
        ...

    def release(self, ip: IPAddress) -> None:
        """Remove the reservation; an absent one is not an error."""
        ...

    def last_reserved(self, set_index: int) -> IPAddress | None: ...

    def addresses_held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        """The addresses (container ID, ifname) holds; takes the lock itself."""
        ...
