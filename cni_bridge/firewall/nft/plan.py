"""Planning element changes in our nftables table (pure: data in, nft batch text out).

Fast paths need no read: a removal re-adds each element with its owner id and deletes it, which
succeeds whether or not it was there and fails (aborting the batch) when another owner holds the
key. Only then, and for remove-by-owner, GC and CHECK, is the table read and the change exact.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from cni_bridge.firewall import names
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.model import IPNetwork, MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.nft.schema import (
    MAPS_BY_NAME,
    TABLE_REF,
    ChainSpec,
    hostport_net_chain,
    masq_net_chain,
)
from cni_bridge.firewall.nft.state import Element, Key, Listing


@dataclass(frozen=True)
class Planned:
    element: Element
    exclusive: bool = False  # a host port: another owner's element is a conflict, not stale

    @property
    def owner_hash(self) -> str | None:
        return self.element.owner_hash


@dataclass(frozen=True)
class Conflict:
    wanted: Planned
    holder: Element


def _owner_value(owner: Owner) -> Key:
    return (str(owner.id),)


def masq_elements(entry: MasqEntry) -> list[Planned]:
    """The owner record first: re-adding it is what fails when another owner holds the address."""
    v, ip, tag = entry.version, str(entry.address.ip), entry.owner.tag
    via = f"goto {masq_net_chain(entry.subnet).name}"
    return [Planned(Element(names.masq_owner_map(v), (ip,), _owner_value(entry.owner), tag)),
            Planned(Element(names.masq_via_map(v), (ip,), (via,), tag))]


def dnat_element(entry: PortMapping) -> Planned:
    v, tag = entry.version, entry.owner.tag
    value = (str(entry.container_ip.ip), str(entry.container_port))
    if entry.host_ip is None:
        key: Key = (entry.protocol, str(entry.host_port))
        return Planned(Element(names.hostport_any_map(v), key, value, tag), exclusive=True)
    key = (str(entry.host_ip), entry.protocol, str(entry.host_port))
    return Planned(Element(names.hostport_ip_map(v), key, value, tag), exclusive=True)


def _masq_variants(entry: PortMapping) -> dict[str, Element]:
    v, ip, tag = entry.version, str(entry.container_ip.ip), entry.owner.tag
    value = _owner_value(entry.owner)
    via = f"jump {hostport_net_chain(entry.container_ip.network).name}"
    out = {"owner": Element(names.hostport_owner_map(v), (ip,), value, tag),
           "hairpin": Element(names.hostport_via_map(v), (ip,), (via,), tag),
           "all": Element(names.hostport_all_map(v), (ip,), value, tag)}
    if v == 4:
        out["localhost"] = Element(names.hostport_lo_map(v), (ip,), value, tag)
    return out


def hairpin_subnets(entries: Sequence[PortMapping], options: PortmapOptions) -> list[IPNetwork]:
    if not options.snat or options.masq_all:
        return []
    return list(dict.fromkeys(e.container_ip.network for e in entries))


def portmap_elements(entries: Sequence[PortMapping], options: PortmapOptions) -> list[Planned]:
    planned = [Planned(_masq_variants(e)["owner"]) for e in entries]
    planned += [dnat_element(e) for e in entries]
    if options.snat:
        kinds = ("all",) if options.masq_all else ("hairpin", "localhost")
        for e in entries:
            variants = _masq_variants(e)
            planned += [Planned(variants[k]) for k in kinds if k in variants]
    return _first_per_key(planned)


def portmap_removal_elements(entries: Sequence[PortMapping]) -> list[Element]:
    """What removing `entries` deletes, whatever snat/masqAll were when they were added."""
    found = [*(dnat_element(e).element for e in entries),
             *(el for e in entries for el in _masq_variants(e).values())]
    return [p.element for p in _first_per_key(Planned(el) for el in found)]


def _first_per_key(planned: Iterable[Planned]) -> list[Planned]:
    seen: dict[tuple[str, Key], Planned] = {}
    for p in planned:
        seen.setdefault((p.element.map, p.element.key), p)
    return list(seen.values())


# --- rendering -----------------------------------------------------------------------------------


def _fmt(fields: Key, kinds: Sequence[str]) -> str:
    return " . ".join(f"{int(f):#010x}" if k == "owner" else f
                      for f, k in zip(fields, kinds, strict=True))


def render_element(el: Element, comment: bool = True) -> str:
    spec = MAPS_BY_NAME[el.map]
    text = _fmt(el.key, spec.key_fields)
    if comment and el.comment:
        text += f' comment "{el.comment}"'
    return f"{text} : {_fmt(el.value, spec.value_fields)}"


def add_line(el: Element, create: bool = False) -> str:
    verb = "create" if create else "add"
    return f"{verb} element {TABLE_REF} {el.map} {{ {render_element(el)} }}"


def delete_line(el: Element, verb: str = "delete") -> str:
    key = _fmt(el.key, MAPS_BY_NAME[el.map].key_fields)
    return f"{verb} element {TABLE_REF} {el.map} {{ {key} }}"


def get_line(el: Element) -> str:
    return delete_line(el, "get")


def plan_add(planned: Sequence[Planned]) -> list[str]:
    """Fast path: host ports are created (fails if taken), owner-id elements added."""
    return [add_line(p.element, create=p.exclusive) for p in planned]


def plan_tolerant_delete(elements: Sequence[Element]) -> list[str]:
    """Delete each element whether present or not; aborts if another owner holds a key."""
    lines: list[str] = []
    for el in elements:
        lines += [f"add element {TABLE_REF} {el.map} {{ {render_element(el, comment=False)} }}",
                  delete_line(el)]
    return lines


# --- slow paths (from a listing) -----------------------------------------------------------------


def resolve_add(listing: Listing, planned: Sequence[Planned]) -> tuple[list[str], list[Conflict],
                                                                      list[Element]]:
    """(lines, conflicts, replaced): a host port another owner holds is a conflict; any other
    element another owner holds is stale (its address was given out again) and replaced."""
    lines: list[str] = []
    conflicts: list[Conflict] = []
    replaced: list[Element] = []
    for p in planned:
        current = listing.get(p.element.map, p.element.key)
        if current is None:
            lines.append(add_line(p.element))
        elif current.owner_hash == p.owner_hash:
            if current.value != p.element.value:
                lines += [delete_line(current), add_line(p.element)]
        elif p.exclusive:
            conflicts.append(Conflict(p, current))
        else:
            replaced.append(current)
            lines += [delete_line(current), add_line(p.element)]
    return lines, conflicts, replaced


def owned_elements(listing: Listing, owner: Owner, maps: Collection[str],
                   keys: Collection[tuple[str, Key]] | None = None) -> list[Element]:
    return [el for el in listing.all_elements()
            if el.map in maps and el.owner_hash == owner.tag_hash
            and (keys is None or (el.map, el.key) in keys)]


def gc_elements(listing: Listing, network: str, valid_owners: Collection[Owner],
                maps: Collection[str]) -> list[Element]:
    prefix = names.network_hash(network) + "-"
    valid = {o.tag_hash for o in valid_owners}
    return [el for el in listing.all_elements()
            if el.map in maps and el.owner_hash is not None
            and el.owner_hash.startswith(prefix) and el.owner_hash not in valid]


def unused_subnet_chains(listing: Listing, doomed: Collection[Element]) -> list[str]:
    gone = {(el.map, el.key) for el in doomed}
    used = {v.split(" ", 1)[1] for el in listing.all_elements() if (el.map, el.key) not in gone
            for v in el.value if v.startswith(("goto ", "jump "))}
    prefixes = (names.MASQ_NET_CHAIN_PREFIX, names.HOSTPORT_NET_CHAIN_PREFIX)
    return [f"delete chain {TABLE_REF} {name}" for name in sorted(listing.chains)
            if name.startswith(prefixes) and name not in used]


def check_elements(listing: Listing, planned: Sequence[Planned]) -> list[str]:
    missing = []
    for p in planned:
        el = p.element
        current = listing.get(el.map, el.key)
        what = f"element {render_element(el, comment=False)} in nft map {el.map}"
        if current is None:
            missing.append(f"{what} is missing")
        elif current.owner_hash != p.owner_hash:
            missing.append(f"{what} belongs to {describe_owner(current.comment)}")
        elif current.value != el.value:
            missing.append(f"{what} has value {' . '.join(current.value)}")
    return missing


def check_outline(listing: Listing, chains: Sequence[ChainSpec], maps: Iterable[str]) -> list[str]:
    missing = [f"nft map {TABLE_REF} {m} is missing" for m in maps if m not in listing.maps]
    for spec in {c.name: c for c in chains}.values():
        chain = listing.chains.get(spec.name)
        if chain is None:
            missing.append(f"nft chain {TABLE_REF} {spec.name} is missing")
        elif chain.rule_count != len(spec.rules):
            missing.append(f"nft chain {TABLE_REF} {spec.name} has {chain.rule_count} rules, "
                           f"expected {len(spec.rules)}")
    return missing


def describe_host_port(el: Element) -> str:
    """``*:8080/tcp``, ``198.51.100.1:8080/tcp`` or ``[2001:db8::1]:8080/tcp``."""
    if len(el.key) == 2:
        return f"*:{el.key[1]}/{el.key[0]}"
    addr, proto, port = el.key
    return f"[{addr}]:{port}/{proto}" if ":" in addr else f"{addr}:{port}/{proto}"


def conflict_error(conflicts: Sequence[Conflict]) -> HostPortConflictError:
    holders = [(describe_host_port(c.wanted.element), describe_owner(c.holder.comment))
               for c in conflicts]
    msg = "; ".join(f"host port {port} is already published by {holder}"
                    for port, holder in holders)
    return HostPortConflictError(msg, holders=holders)


def describe_owner(comment: str | None) -> str:
    if not comment:
        return "an unknown owner"
    parts = dict(p.split(": ", 1) for p in comment.split(", ")[1:] if ": " in p)
    if "id" in parts:
        return f"container {parts['id']} ({parts.get('net', '?')}/{parts.get('if', '?')})"
    return f"owner {comment}"
