"""The interface every firewall backend implements.

One object per backend, built with the `CommandRunner` it must use (the nftables backend runs
nft in-process for the production runner). Every mutating call is one atomic transaction per
nft run or tool invocation, and makes none at all when there is nothing to do.

Verbs:
- ``add_*`` installs entries (idempotent: adding twice is adding once);
- ``remove_*`` removes one owner's entries and tolerates anything already gone; with ``None``
  instead of addresses/mappings it finds the owner's state by its tag; ``remove_portmappings``
  takes the ADD's options too when known (the iptables backend's exact removal needs its
  conditions: see ipt_exact);
- ``check_*`` only reads and returns a precise list of what is missing (empty: all present);
- ``gc_*`` removes the state of `network` whose owner is not in `valid_owners`, and returns a
  description of what it removed;
- ``missing_skeleton`` reads only what every attachment of `rules` shares (our table, its
  maps and chains; iptables' jumps from the built-in chains), at a cost that does not grow with
  them, and says what is gone: a firewall reload takes it away, a DEL never does.

A backend's removals may sweep another layout too (an owner's leftovers from before a node
changed backend): it is handed that layout as a `Removal` (see firewall.leftovers).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from cni_bridge.firewall.model import (
    IPInterface,
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    RuleSet,
)


class Removal(Protocol):
    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None: ...

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None: ...


class Backend(Removal, Protocol):
    name: str

    def available(self) -> bool: ...

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None: ...

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]: ...

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]: ...

    def add_portmappings(
        self, entries: Sequence[PortMapping], options: PortmapOptions
    ) -> None: ...

    def check_portmappings(
        self, entries: Sequence[PortMapping], options: PortmapOptions
    ) -> list[str]: ...

    def gc_portmappings(self, network: str, valid_owners: Collection[Owner]) -> list[str]: ...

    def missing_skeleton(self, rules: RuleSet) -> list[str]: ...
