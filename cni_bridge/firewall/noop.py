"""A backend that installs nothing: for networks whose firewall is managed elsewhere."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cni_bridge.firewall.model import (
    IPInterface,
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    RuleSet,
)


class NoopBackend:
    name = "none"

    def available(self) -> bool:
        return True

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None:
        return None

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        return None

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]:
        return []

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        return []

    def add_portmappings(self, entries: Sequence[PortMapping], options: PortmapOptions) -> None:
        return None

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None:
        return None

    def check_portmappings(self, entries: Sequence[PortMapping],
                           options: PortmapOptions) -> list[str]:
        return []

    def gc_portmappings(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        return []

    def missing_skeleton(self, rules: RuleSet) -> list[str]:
        return []
