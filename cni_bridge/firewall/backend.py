"""The interface every firewall backend implements.

Every mutating call is one atomic transaction per tool run, and none when there is nothing to
do. ``add_*`` is idempotent; ``remove_*`` tolerates what is gone, and with ``None`` finds the
owner's state by its tag (the iptables exact removal needs the ADD's options: iptables.exact);
``check_*`` and ``missing_skeleton`` only read and list what is missing; ``gc_*`` lists what it
removed. ``missing_skeleton`` reads only what all attachments share, at a constant cost: a
firewall reload takes it away, a DEL never does.
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
