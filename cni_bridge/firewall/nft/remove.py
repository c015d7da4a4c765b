"""Removing one owner's nftables state: our table's elements and the reference's rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cni_bridge.firewall import names
from cni_bridge.firewall.model import IPInterface, MasqEntry, Owner, PortMapping
from cni_bridge.firewall.nft import reference as reference_nft
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.nft.plan import (
    delete_line,
    masq_elements,
    owned_elements,
    plan_tolerant_delete,
    portmap_removal_elements,
)
from cni_bridge.firewall.nft.schema import hostport_maps, masq_maps
from cni_bridge.firewall.nft.state import Element, Key, Listing

OUR_TABLE = (names.NFT_FAMILY, names.NFT_TABLE)
MASQ_MAPS = frozenset(m.name for v in (4, 6) for m in masq_maps(v))
HOSTPORT_MAPS = frozenset(m.name for v in (4, 6) for m in hostport_maps(v))


@dataclass(frozen=True)
class Kind:
    maps: frozenset[str]
    reference_tables: tuple[tuple[str, str], ...]
    reference_planner: Callable[[Listing, Owner], list[str]]


MASQUERADE = Kind(MASQ_MAPS, (reference_nft.REF_MASQ,), reference_nft.plan_remove_masq)
HOSTPORTS = Kind(HOSTPORT_MAPS, reference_nft.REF_HOSTPORT, reference_nft.plan_remove_hostports)


def masq_keys(owner: Owner, addresses: Sequence[IPInterface] | None) -> list[Element] | None:
    if addresses is None:
        return None
    return [p.element for a in addresses for p in masq_elements(MasqEntry.of(owner, a))]


def hostport_keys(entries: Sequence[PortMapping] | None) -> list[Element] | None:
    return None if entries is None else portmap_removal_elements(entries)


def _reference_lines(nft: Nft, kind: Kind, owner: Owner) -> list[str]:
    lines: list[str] = []
    for family, table in kind.reference_tables:
        listing = nft.table(family, table)
        lines += kind.reference_planner(listing, owner) if listing else []
    return lines


def remove_owner(nft: Nft, kind: Kind, owner: Owner, elements: list[Element] | None,
                 reference_layouts: bool = True) -> None:
    """One batch: tolerant deletes of `elements` (else the owner's, by tag) plus the owner's
    rules in the reference's tables; every table may be absent."""
    reference = _reference_lines(nft, kind, owner) if reference_layouts else []
    lines = list(reference)
    if elements is None:
        ours = nft.table(*OUR_TABLE) or Listing()
        lines += [delete_line(el) for el in owned_elements(ours, owner, kind.maps)]
    else:
        lines += plan_tolerant_delete(elements)
    if not lines or nft.apply(lines).ok:
        return
    # Our table is missing, another owner holds a key, or the state moved: read, be exact.
    keys: set[tuple[str, Key]] | None = (
        None if elements is None else {(el.map, el.key) for el in elements})
    ours = nft.table(*OUR_TABLE) or Listing()
    reference = _reference_lines(nft, kind, owner) if reference else []
    lines = reference + [delete_line(el) for el in owned_elements(ours, owner, kind.maps, keys)]
    nft.apply_checked(lines, f"cannot remove nftables entries of {owner}")
