"""nftables change notifications: the health watcher's trigger.

The kernel multicasts every committed nftables change on ``NETLINK_NETFILTER`` group
``NFNLGRP_NFTABLES``, in the namespace where it happens. iptables here is iptables-nft, so its
changes arrive too. What matters is a deletion (of a table, chain, rule or set) in a table whose
loss breaks our attachments: ``inet cni_bridge`` (nftables backend, and the isolation rule),
``bridge nat`` (the spoof check, whatever the backend) or the ``ip``/``ip6`` ``nat`` tables
(iptables backend). Element deletions are what every DEL does and are ignored.
"""

from __future__ import annotations

import errno
import socket
import struct

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
# NFT_MSG_DELTABLE, DELCHAIN, DELRULE, DELSET, and the DESTROY* variants (kernel >= 6.3)
DELETIONS = frozenset({2, 5, 8, 11, 26, 27, 28, 29})
TABLE_DELETIONS = frozenset({2, 26})  # NFT_MSG_DELTABLE, NFT_MSG_DESTROYTABLE
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_BRIDGE, NFPROTO_IPV6 = 1, 2, 7, 10
TABLE_ATTR = 1  # NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE}: the table's name
WATCHED = {(NFPROTO_INET, "cni_bridge"): "nftables", (NFPROTO_BRIDGE, "nat"): "nftables",
           (NFPROTO_IPV4, "nat"): "iptables", (NFPROTO_IPV6, "nat"): "iptables"}
ALL = frozenset(WATCHED.values())
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_ATTR = struct.Struct("=HH")  # struct nlattr


def _align(n: int) -> int:
    return (n + 3) & ~3


def table_name(payload: bytes) -> str | None:
    """The table named by a message's attributes (after the 4-byte nfgenmsg)."""
    offset = 4
    while offset + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, offset)
        if length < _ATTR.size:
            return None
        if kind & 0x3FFF == TABLE_ATTR:
            raw = payload[offset + _ATTR.size:offset + length]
            return raw.split(b"\0", 1)[0].decode("ascii", "replace")
        offset += _align(length)
    return None


def backends_touched(data: bytes, lost: set[str] | None = None) -> set[str]:
    """The backends whose tables lost something in this batch of notifications; those whose
    table itself was deleted (a reload: an ADD may recreate its skeleton before the check
    sees it gone, but not the other attachments' entries) are added to `lost`."""
    touched: set[str] = set()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        subsystem, message = kind >> 8, kind & 0xFF
        if subsystem == NFNL_SUBSYS_NFTABLES and message in DELETIONS:
            payload = data[offset + _HEADER.size:offset + length]
            if payload:
                backend = WATCHED.get((payload[0], table_name(payload) or ""))
                if backend is not None:
                    touched.add(backend)
                    if lost is not None and message in TABLE_DELETIONS:
                        lost.add(backend)
        offset += _align(length)
    return touched


def open_watch() -> socket.socket:
    """A non-blocking socket subscribed to this namespace's nftables notifications."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                         NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    except BaseException:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket, lost: set[str] | None = None) -> set[str]:
    """Read every pending notification; an overrun (ENOBUFS: some were lost) counts as the
    loss of every table we watch."""
    touched: set[str] = set()
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return touched
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                touched |= ALL
                if lost is not None:
                    lost |= ALL
                continue
            raise
        if not data:
            return touched
        touched |= backends_touched(data, lost)
