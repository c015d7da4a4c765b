"""Names and tag formats that outlive versions of this plugin.

EVERY VALUE IN THIS MODULE MUST NEVER CHANGE. They name state that stays in the kernel across
upgrades and across swaps between this plugin and the reference plugins: a DEL run by a newer (or
older, or the reference) binary finds what an ADD created only because it computes the same names.
Changing one of them leaks every rule, element and chain created before the change.

iptables names and comments, and the nft owner tag, are the reference plugins' formats.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha512
else:
    try:  # CPython 3.11's own SHA-512, without the ~1.5 ms hashlib spends importing every digest
        from _sha512 import sha512
    except ImportError:  # other interpreters: the same digest through hashlib
        from hashlib import sha512

# --- iptables (reference layout, nat table) ----------------------------------------------------

CHAIN_PREFIX = "CNI-"
MAX_CHAIN_LEN = 28  # every per-container chain name is exactly this long
DNAT_CHAIN_PREFIX = "DN-"
OLD_SNAT_CHAIN_PREFIX = "SN-"  # created by portmap before 2017; still torn down on DEL
HOSTPORT_DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
HOSTPORT_SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
HOSTPORT_MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
SETMARK_COMMENT = "CNI portfwd masquerade mark"
MASQ_JUMP_COMMENT = "CNI portfwd requiring masquerade"
MAX_IPT_COMMENT = 255
MULTIPORT_MAX = 15  # ports per `-m multiport` match
DEFAULT_MARK_MASQ_BIT = 13
MULTICAST_V4 = "224.0.0.0/4"
MULTICAST_V6 = "ff00::/8"

# --- reference nftables layouts (read and cleaned only) -----------------------------------------

REF_MASQ_TABLE = "cni_plugins_masquerade"  # family inet
REF_MASQ_CHAIN = "masq_checks"
REF_HOSTPORT_TABLE = "cni_hostport"  # families ip and ip6
REF_HOSTPORT_CHAINS = ("hostports", "hostip_hostports", "masquerading")
NFT_COMMENT_MAX = 128

# --- our nftables table ------------------------------------------------------------------------

NFT_FAMILY = "inet"
NFT_TABLE = "cni_bridge"  # never change: every element of every container lives here
NFT_TABLE_COMMENT = "cni-bridge: masquerade and host ports (elements carry owner tags)"

MASQ_CHAIN = "masq_postrouting"  # not "masquerade": that is an nft keyword
HOSTPORT_PREROUTING_CHAIN = "hostport_prerouting"
HOSTPORT_OUTPUT_CHAIN = "hostport_output"
HOSTPORT_MASQ_CHAIN_NFT = "hostport_masquerade"
HOSTPORT_LOCALNET_CHAIN = "hostport_localnet"


def masq_owner_map(version: int) -> str:
    return f"masq_owner{version}"


def masq_via_map(version: int) -> str:
    return f"masq_via{version}"


def hostport_ip_map(version: int) -> str:
    return f"hostport_ip{version}"


def hostport_any_map(version: int) -> str:
    return f"hostport_any{version}"


def hostport_owner_map(version: int) -> str:
    return f"hostport_owner{version}"


def hostport_via_map(version: int) -> str:
    return f"hostport_via{version}"


def hostport_lo_map(version: int) -> str:
    return f"hostport_lo{version}"


def hostport_all_map(version: int) -> str:
    return f"hostport_all{version}"


def hostport_dnat_chain(version: int) -> str:
    return f"hostport_dnat{version}"


# Per-subnet chains, shared by the containers of a subnet: "masq_net4_10.88.0.0/16",
# "hostport_net6_fd00-89--/64" (":" is not allowed in a chain name).
MASQ_NET_CHAIN_PREFIX = "masq_net"
HOSTPORT_NET_CHAIN_PREFIX = "hostport_net"


def subnet_chain(prefix: str, subnet: str) -> str:
    version = 6 if ":" in subnet else 4
    return f"{prefix}{version}_{subnet.replace(':', '-')}"


# --- hashing and tags --------------------------------------------------------------------------


def sha512_hex(text: str) -> str:
    return sha512(text.encode()).hexdigest()


def _hash_with_prefix(length: int, prefix: str, to_hash: str) -> str:
    """The reference's MustFormatHashWithPrefix: prefix + hex digest, cut to `length`."""
    return (prefix + sha512_hex(to_hash))[:length]


def masq_chain_name(network: str, container_id: str) -> str:
    """``CNI-`` + 24 hex chars; ifname is not part of it (reference, for historical reasons)."""
    return _hash_with_prefix(MAX_CHAIN_LEN, CHAIN_PREFIX, network + container_id)


def dnat_chain_name(network: str, container_id: str) -> str:
    return _hash_with_prefix(MAX_CHAIN_LEN, CHAIN_PREFIX + DNAT_CHAIN_PREFIX,
                             network + container_id)


def old_snat_chain_name(network: str, container_id: str) -> str:
    return _hash_with_prefix(MAX_CHAIN_LEN, CHAIN_PREFIX + OLD_SNAT_CHAIN_PREFIX,
                             network + container_id)


def go_quote(text: str) -> str:
    """Go's ``%q`` for a string: double quotes, backslash escapes, printable runes kept."""
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def trim_ipt_comment(comment: str) -> str:
    """The reference's trimComment: at most 255 bytes, cut to 253 plus ``...``."""
    raw = comment.encode()
    if len(raw) <= MAX_IPT_COMMENT:
        return comment
    return raw[: MAX_IPT_COMMENT - 2].decode(errors="ignore") + "..."


def masq_comment(network: str, container_id: str) -> str:
    return f"name: {go_quote(network)} id: {go_quote(container_id)}"


def dnat_comment(network: str, container_id: str) -> str:
    return trim_ipt_comment(f"dnat {masq_comment(network, container_id)}")


def network_hash(network: str) -> str:
    return sha512_hex(network)[:16]


def instance_hash(network: str, ifname: str, container_id: str) -> str:
    return network_hash(network) + "-" + sha512_hex(f"{ifname}:{container_id}")[:16]


def owner_tag(network: str, ifname: str, container_id: str) -> str:
    """Starts with ``instance_hash``: it still identifies the owner when cut to 128 chars."""
    def strip(text: str) -> str:  # the reference drops double quotes
        return text.replace('"', "")

    tag = (f"{instance_hash(network, ifname, container_id)}, net: {strip(network)}, "
           f"if: {strip(ifname)}, id: {strip(container_id)}")
    return tag[:NFT_COMMENT_MAX]


def owner_id(network: str, ifname: str, container_id: str) -> int:
    """The value of our owner maps. A removal re-adds an element with it before deleting it: the
    kernel refuses that add when another owner holds the key, so none deletes another's."""
    return int(sha512_hex(instance_hash(network, ifname, container_id))[:8], 16)
