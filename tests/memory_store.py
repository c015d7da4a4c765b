"""An in-memory host-local Store for unit tests: the file store's semantics without files."""

from __future__ import annotations

from collections.abc import Container, Iterator
from contextlib import AbstractContextManager, contextmanager

from cni_bridge.cni.result import IPAddress
from cni_bridge.ipam.host_local.store import Owner, owned_by, owned_or_legacy, sort_ips


class MemoryStore:
    """Reservations in a dict, a cursor per range set; the lock is a depth counter."""

    def __init__(self) -> None:
        self.files: dict[IPAddress, Owner] = {}
        self.cursors: dict[int, IPAddress] = {}
        self.depth = 0
        self.lock_count = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.depth == 0:
            self.lock_count += 1
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def locked(self) -> AbstractContextManager[None]:
        return self._locked()

    def _require_lock(self) -> None:
        if not self.depth:
            raise AssertionError("store used without holding its lock")

    def reservations(self) -> dict[IPAddress, Owner]:
        self._require_lock()
        return dict(self.files)

    def holder(self, ip: IPAddress) -> Owner | None:
        self._require_lock()
        return self.files.get(ip)

    def taken(self) -> Container[IPAddress]:
        self._require_lock()
        return self.files.keys()

    def held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        self._require_lock()
        return sort_ips(owned_by(self.files.items(), container_id, ifname))

    def held_or_legacy(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        self._require_lock()
        return sort_ips(owned_or_legacy(self.files.items(), container_id, ifname))

    def reserve(self, ip: IPAddress, owner: Owner, set_index: int) -> bool:
        self._require_lock()
        if ip in self.files:
            return False
        self.files[ip] = owner
        self.cursors[set_index] = ip
        return True

    def release(self, ip: IPAddress) -> None:
        self._require_lock()
        self.files.pop(ip, None)

    def last_reserved(self, set_index: int) -> IPAddress | None:
        self._require_lock()
        return self.cursors.get(set_index)

    def addresses_held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        with self.locked():
            return self.held(container_id, ifname)
