"""Keyed reads of nftables straight from the kernel (nf_tables netlink), in-process.

libnftables (nftables 1.0.6) fills its cache with every element of every set of a table before
a ``list table``, ``list chain`` or ``get element`` there (``--terse`` only shortens the
output), so those reads grow with the number of containers: 50-70 ms each with 2,000 of them.
The kernel answers by key. Results are in the forms ``nft -j list`` gives after `canonical`
(a `Listing`, `Rule`s), so the planners compare them as they compare a listing. Only for the
namespace this process is in.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from cni_bridge.firewall.nft.schema import MAPS_BY_NAME
from cni_bridge.firewall.nft.state import Chain, Element, Key, Listing, Rule
from cni_bridge.netlink import (
    NETLINK_NETFILTER,
    NLM_F_DUMP,
    KernelError,
    NetlinkSocket,
    attr,
    iter_attrs,
    nested,
    nfgenmsg,
    parse_attrs,
)

# hand-packed: pyroute2's nftsocket costs ~40 ms to import on every call that reads nftables
# linux/netfilter/nf_tables.h
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 4, 7, 10, 13
NFT_MSG_GETGEN, NFTA_GEN_ID = 16, 1
READ_ATTEMPTS = 10
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_USERDATA = 1, 2, 3, 7
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS = 1, 2, 3
NFT_SET_MAP = 0x8
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_USERDATA = 1, 2, 6
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
VERDICTS = {0: "drop", 1: "accept", -1: "continue", -3: "jump", -4: "goto", -5: "return"}
UDATA_COMMENT = 0  # libnftnl: NFTNL_UDATA_RULE_COMMENT, NFTNL_UDATA_SET_ELEM_COMMENT
FAMILIES = {"inet": 1, "ip": 2, "bridge": 7, "ip6": 10}
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
# Bytes of each datatype in a key or value; in a concatenation each field takes whole 32-bit
# registers. Marks are host-endian, addresses and ports network order.
SIZES = {"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 1, "inet_service": 2, "mark": 4,
         "ifname": 16}
BATCH = 64  # elements asked for per request


def _msg(kind: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | kind


def _nfgen(family: str) -> bytes:
    return nfgenmsg(FAMILIES[family])


def strz(value: bytes | None) -> str:
    return (value or b"").split(b"\0", 1)[0].decode(errors="replace")


T = TypeVar("T")


def _generation(nl: NetlinkSocket) -> bytes:
    [(_, body)] = nl.request(_msg(NFT_MSG_GETGEN), _nfgen("inet"))
    return parse_attrs(body[4:]).get(NFTA_GEN_ID, b"")


def _consistent(read: Callable[[NetlinkSocket], T]) -> T:
    """`read` from one generation of the ruleset: dumps span several messages and reads
    several dumps, while concurrent calls commit (a chain flushed and refilled would be seen
    twice). Read again while the generation moved, as nft does; an ENOENT is an answer."""
    with NetlinkSocket(NETLINK_NETFILTER) as nl:
        for _ in range(READ_ATTEMPTS):
            before = _generation(nl)
            result = read(nl)
            if _generation(nl) == before:
                return result
    raise KernelError(errno.EAGAIN, "the ruleset kept changing while being read")


def _or_none(read: Callable[[], T]) -> T | None:
    """`read`, or None where the kernel answers that the object does not exist."""
    try:
        return read()
    except KernelError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def _rule_dump(nl: NetlinkSocket, family: str, table: str, chain: str) -> list[bytes]:
    """One chain's rules, each once. A dump spanning several messages resumes by position, and
    rules a concurrent transaction is adding (not yet visible) shift positions: the kernel can
    send a rule twice, in the same generation. Per chain (a few rules: one message) and
    de-duplicated by handle, the answer is exact."""
    names = (attr(NFTA_RULE_TABLE, table.encode() + b"\0")
             + attr(NFTA_RULE_CHAIN, chain.encode() + b"\0"))
    seen: dict[bytes, bytes] = {}
    for _, body in nl.request(_msg(NFT_MSG_GETRULE), _nfgen(family) + names, NLM_F_DUMP):
        seen.setdefault(parse_attrs(body[4:]).get(NFTA_RULE_HANDLE, b""), body)
    return list(seen.values())


def skeleton(family: str, table: str) -> Listing | None:
    """Chains with their rule counts, and maps, of one table; None when it does not exist."""
    name = table.encode() + b"\0"

    def read(nl: NetlinkSocket) -> Listing | None:
        def dump(kind: int, attrs: bytes) -> list[bytes]:
            return [body for _, body in nl.request(_msg(kind), _nfgen(family) + attrs,
                                                   NLM_F_DUMP)]
        sets = _or_none(lambda: dump(NFT_MSG_GETSET, attr(NFTA_SET_TABLE, name)))
        if sets is None:
            return None
        chains = [parse_attrs(body[4:]) for body in dump(NFT_MSG_GETCHAIN, b"")]
        names = {strz(c.get(NFTA_CHAIN_NAME)) for c in chains
                 if strz(c.get(NFTA_CHAIN_TABLE)) == table}
        counts = {n: len(_rule_dump(nl, family, table, n)) for n in names}
        maps = set()
        for body in sets:
            attrs = parse_attrs(body[4:])
            flags = struct.unpack("!I", attrs.get(NFTA_SET_FLAGS, b"\0" * 4))[0]
            if flags & NFT_SET_MAP:
                maps.add(strz(attrs.get(NFTA_SET_NAME)))
        return Listing(maps=frozenset(maps),
                       chains={n: Chain(n, None, c) for n, c in counts.items()})

    return _consistent(read)


def _types(type_text: str) -> list[str]:
    return type_text.split(" . ")


def encode(type_text: str, fields: Key) -> bytes:
    """A key in the kernel's layout: each field of a concatenation padded to 32 bits."""
    types = _types(type_text)
    out = b""
    for kind, text in zip(types, fields, strict=True):
        if kind in ("ipv4_addr", "ipv6_addr"):
            raw = ipaddress.ip_address(text).packed
        elif kind == "inet_proto":
            raw = bytes([PROTOCOLS.get(text, 0) or int(text)])
        elif kind == "inet_service":
            raw = struct.pack("!H", int(text))
        elif kind == "ifname":
            raw = text.encode()[:SIZES[kind]].ljust(SIZES[kind], b"\0")
        else:
            raise ValueError(f"no key encoding for {kind}")
        out += raw + b"\0" * ((-len(raw) % 4) if len(types) > 1 else 0)
    return out


def decode(type_text: str, data: bytes) -> Key:
    """The text form of a key or value (as `nft_state.canonical` gives it)."""
    types = _types(type_text)
    fields: list[str] = []
    pos = 0
    for kind in types:
        size = SIZES[kind]
        raw = data[pos:pos + size]
        pos += size + ((-size % 4) if len(types) > 1 else 0)
        if kind in ("ipv4_addr", "ipv6_addr"):
            fields.append(str(ipaddress.ip_address(raw)))
        elif kind == "inet_proto":
            fields.append(next((n for n, v in PROTOCOLS.items() if v == raw[0]), str(raw[0])))
        elif kind == "inet_service":
            fields.append(str(struct.unpack("!H", raw)[0]))
        elif kind == "ifname":
            fields.append(strz(raw))
        else:  # mark
            fields.append(str(struct.unpack("=I", raw)[0]))
    return tuple(fields)


def _verdict(data: bytes) -> str:
    found = parse_attrs(data)
    code = struct.unpack("!i", found.get(NFTA_VERDICT_CODE, b"\0" * 4))[0]
    verb = VERDICTS.get(code, str(code))
    chain = strz(found.get(NFTA_VERDICT_CHAIN))
    return f"{verb} {chain}" if chain else verb


def _comment(userdata: bytes | None) -> str | None:
    """The comment in a rule's or element's user data (libnftnl's type-length-value list)."""
    pos = 0
    while userdata and pos + 2 <= len(userdata):
        kind, length = userdata[pos], userdata[pos + 1]
        if kind == UDATA_COMMENT:
            return strz(userdata[pos + 2:pos + 2 + length])
        pos += 2 + length
    return None


def _elements(map_name: str, body: bytes) -> list[Element]:
    spec = MAPS_BY_NAME[map_name]
    listed = parse_attrs(body[4:]).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    out = []
    for kind, item in iter_attrs(listed):
        if kind != NFTA_LIST_ELEM:
            continue
        found = parse_attrs(item)
        key = decode(spec.key_type, parse_attrs(found.get(NFTA_SET_ELEM_KEY, b""))
                     .get(NFTA_DATA_VALUE, b""))
        data = parse_attrs(found.get(NFTA_SET_ELEM_DATA, b""))
        value = ((_verdict(data[NFTA_DATA_VERDICT]),) if NFTA_DATA_VERDICT in data
                 else decode(spec.value_type, data.get(NFTA_DATA_VALUE, b"")))
        out.append(Element(map_name, key, value, _comment(found.get(NFTA_SET_ELEM_USERDATA))))
    return out


def _get_request(family: str, table: str, set_name: str, keys: Sequence[bytes]) -> bytes:
    listed = b"".join(nested(NFTA_LIST_ELEM, nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, k)))
                      for k in keys)
    return (_nfgen(family) + attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + nested(NFTA_SET_ELEM_LIST_ELEMENTS, listed))


def _get(nl: NetlinkSocket, family: str, table: str, set_name: str,
         keys: Sequence[bytes]) -> list[bytes] | None:
    """The kernel's answers for `keys` of one set; None when any is missing."""
    def read() -> list[bytes]:
        answers: list[bytes] = []
        for start in range(0, len(keys), BATCH):  # the answers must fit the socket
            request = _get_request(family, table, set_name, keys[start:start + BATCH])
            answers += [body for _, body in nl.request(_msg(NFT_MSG_GETSETELEM), request)]
        return answers

    return _or_none(read)


def elements(family: str, table: str, wanted: Sequence[Element]) -> Listing | None:
    """`wanted`'s elements (of our maps) as the kernel holds them, by key; None when any is
    missing."""
    by_map: dict[str, list[Element]] = {}
    for el in wanted:
        by_map.setdefault(el.map, []).append(el)

    def read(nl: NetlinkSocket) -> Listing | None:
        found: dict[str, dict[Key, Element]] = {}
        for map_name, els in by_map.items():
            key_type = MAPS_BY_NAME[map_name].key_type
            answers = _get(nl, family, table, map_name, [encode(key_type, el.key) for el in els])
            if answers is None:
                return None
            for body in answers:
                for el in _elements(map_name, body):
                    found.setdefault(map_name, {})[el.key] = el
        return Listing(found, frozenset(found))

    return _consistent(read)


def has_elements(family: str, table: str, set_name: str, key_type: str,
                 keys: Sequence[Key]) -> bool:
    """Whether the set holds every key of `keys` (given in text, of type `key_type`)."""
    if not keys:
        return True
    encoded = [encode(key_type, k) for k in keys]
    return _consistent(lambda nl: _get(nl, family, table, set_name, encoded)) is not None


def chain_rules(family: str, table: str, chain: str) -> tuple[Rule, ...] | None:
    """One chain's rules in order (handle, comment); None when the chain does not exist."""
    this_chain = (attr(NFTA_CHAIN_TABLE, table.encode() + b"\0")
                  + attr(NFTA_CHAIN_NAME, chain.encode() + b"\0"))

    def read(nl: NetlinkSocket) -> list[bytes] | None:
        def dump() -> list[bytes]:
            nl.request(_msg(NFT_MSG_GETCHAIN), _nfgen(family) + this_chain)  # ENOENT if missing
            return _rule_dump(nl, family, table, chain)
        return _or_none(dump)

    answers = _consistent(read)
    if answers is None:
        return None
    rules = []
    for body in answers:
        found = parse_attrs(body[4:])
        handle = struct.unpack("!Q", found.get(NFTA_RULE_HANDLE, b"\0" * 8))[0]
        rules.append(Rule(family, table, chain, handle, _comment(found.get(NFTA_RULE_USERDATA))))
    return tuple(rules)
