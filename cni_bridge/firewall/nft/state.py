"""Reading nft's output into plain data (pure); `canonical` puts every field read back into
the planners' text form, so elements read compare equal to elements planned."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.firewall.nft.schema import MAPS_BY_NAME, FieldKind

Key = tuple[str, ...]


@dataclass(frozen=True)
class Element:
    map: str
    key: Key
    value: Key
    comment: str | None = None

    @property
    def owner_hash(self) -> str | None:
        return self.comment.split(",", 1)[0] if self.comment else None


@dataclass(frozen=True)
class Chain:
    name: str
    hook: str | None
    rule_count: int


@dataclass(frozen=True)
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    comment: str | None


@dataclass(frozen=True)
class Listing:
    elements: Mapping[str, Mapping[Key, Element]] = field(default_factory=dict)
    maps: frozenset[str] = frozenset()
    chains: Mapping[str, Chain] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def get(self, map_name: str, key: Key) -> Element | None:
        return self.elements.get(map_name, {}).get(key)

    def all_elements(self) -> list[Element]:
        return [e for elements in self.elements.values() for e in elements.values()]


def canonical(kind: FieldKind, value: object) -> str:
    if kind == "addr":
        return str(ipaddress.ip_address(str(value)))
    if kind == "owner":
        return str(int(str(value), 0)) if isinstance(value, str) else str(value)
    if kind == "verdict" and isinstance(value, dict) and len(value) == 1:
        verb, arg = next(iter(value.items()))
        return f"{verb} {arg['target']}" if isinstance(arg, dict) else str(verb)
    return str(value)


def _fields(raw: object) -> list[object]:
    if isinstance(raw, dict) and "concat" in raw:
        return list(raw["concat"])
    return [raw]


def _element(map_name: str, raw_key: object, raw_value: object) -> Element:
    comment = None
    if isinstance(raw_key, dict) and "elem" in raw_key:
        comment = raw_key["elem"].get("comment")
        raw_key = raw_key["elem"]["val"]
    return _shaped(map_name, _fields(raw_key), _fields(raw_value), comment,
                   json.dumps([raw_key, raw_value]))


def _shaped(map_name: str, key_parts: Sequence[object], value_parts: Sequence[object],
            comment: str | None, raw: str) -> Element:
    spec = MAPS_BY_NAME[map_name]
    if len(key_parts) != len(spec.key_fields) or len(value_parts) != len(spec.value_fields):
        raise CniError(f"unexpected element shape in nft map {map_name}", raw)
    key = tuple(canonical(k, v) for k, v in zip(spec.key_fields, key_parts, strict=True))
    value = tuple(canonical(k, v) for k, v in zip(spec.value_fields, value_parts, strict=True))
    return Element(map_name, key, value, comment)


def parse_listing(text: str) -> Listing:
    """``nft -j list table|chain|ruleset``; elements only for maps we know."""
    try:
        objects: Sequence[dict[str, Any]] = json.loads(text).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise CniError("cannot parse nft JSON output", str(exc)) from None
    elements: dict[str, dict[Key, Element]] = {}
    maps: set[str] = set()
    chains: dict[str, Chain] = {}
    rules: list[Rule] = []
    counts: dict[str, int] = {}
    for obj in objects:
        if "map" in obj:
            name = obj["map"]["name"]
            maps.add(name)
            if name in MAPS_BY_NAME:
                found = (_element(name, k, v) for k, v in obj["map"].get("elem", []))
                elements[name] = {e.key: e for e in found}
        elif "chain" in obj:
            chain = obj["chain"]
            chains[chain["name"]] = Chain(chain["name"], chain.get("hook"), 0)
        elif "rule" in obj:
            r = obj["rule"]
            counts[r["chain"]] = counts.get(r["chain"], 0) + 1
            rules.append(Rule(r["family"], r["table"], r["chain"], r["handle"], r.get("comment")))
    chains = {n: Chain(n, c.hook, counts.get(n, 0)) for n, c in chains.items()}
    return Listing(elements, frozenset(maps), chains, tuple(rules))


# `nft get element` prints text only (nft 1.0.6 has no JSON for it): per key, a block
# ``map <name> {`` ... ``elements = { <key> comment "<comment>" : <value> }``.
_GET_BLOCK = re.compile(r"^\s*map (\S+) \{\n.*?^\s*elements = \{ (.*?) \}$", re.M | re.S)
_GET_ELEMENT = re.compile(r'^(.+?)(?: comment "((?:[^"\\]|\\.)*)")? : (.+)$', re.S)


def parse_get_elements(text: str) -> Listing:
    elements: dict[str, dict[Key, Element]] = {}
    for map_name, body in _GET_BLOCK.findall(text):
        match = _GET_ELEMENT.match(body.strip())
        if map_name not in MAPS_BY_NAME or match is None:
            raise CniError(f"unexpected nft get element output for map {map_name}", body[:200])
        key_text, comment, value_text = match.groups()
        el = _shaped(map_name, key_text.split(" . "), value_text.strip().split(" . "), comment,
                     body[:200])
        elements.setdefault(map_name, {})[el.key] = el
    return Listing(elements, frozenset(elements))
