"""nftables change notifications: the health watcher's trigger.

The kernel multicasts every committed nftables change on ``NETLINK_NETFILTER`` group
``NFNLGRP_NFTABLES``, in the namespace where it happens. iptables here is iptables-nft, so its
changes arrive too. What matters is a deletion (of a table, chain, rule or set) in a table whose
loss breaks our attachments: ``inet cni_bridge`` (nftables backend, and the isolation rule),
``bridge nat`` (the spoof check, whatever the backend) or the ``ip``/``ip6`` ``nat`` tables
(iptables backend). Element deletions are what every DEL does and are ignored.
"""

from __future__ import annotations

from cni_bridge.firewall.nft.netlink import FAMILIES, NFNL_SUBSYS_NFTABLES, strz
from cni_bridge.netlink import (
    HDR,
    NETLINK_NETFILTER,
    KernelError,
    Subscription,
    frames,
    parse_attrs,
    subscribe,
)

NFNLGRP_NFTABLES = 7
# NFT_MSG_DELTABLE, DELCHAIN, DELRULE, DELSET, and the DESTROY* variants (kernel >= 6.3)
DELETIONS = frozenset({2, 5, 8, 11, 26, 27, 28, 29})
TABLE_DELETIONS = frozenset({2, 26})  # NFT_MSG_DELTABLE, NFT_MSG_DESTROYTABLE
TABLE_ATTR = 1  # NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE}: the table's name
WATCHED = {(FAMILIES["inet"], "cni_bridge"): "nftables", (FAMILIES["bridge"], "nat"): "nftables",
           (FAMILIES["ip"], "nat"): "iptables", (FAMILIES["ip6"], "nat"): "iptables"}
ALL = frozenset(WATCHED.values())


def table_name(payload: bytes) -> str:
    """The table named by a message's attributes (after the 4-byte nfgenmsg); "" if none."""
    return strz(parse_attrs(payload[4:]).get(TABLE_ATTR))


def backends_touched(data: bytes, lost: set[str] | None = None) -> set[str]:
    """The backends whose tables lost something in this batch of notifications; those whose
    table itself was deleted (a reload: an ADD may recreate its skeleton before the check
    sees it gone, but not the other attachments' entries) are added to `lost`."""
    touched: set[str] = set()
    try:
        for offset, length, kind, _flags, _seq in frames(data):
            subsystem, message = kind >> 8, kind & 0xFF
            payload = data[offset + HDR.size:offset + length]
            if subsystem != NFNL_SUBSYS_NFTABLES or message not in DELETIONS or not payload:
                continue
            backend = WATCHED.get((payload[0], table_name(payload)))
            if backend is not None:
                touched.add(backend)
                if lost is not None and message in TABLE_DELETIONS:
                    lost.add(backend)
    except KernelError:  # a malformed message: what came before it still counts
        pass
    return touched


def open_watch() -> Subscription:
    """A socket subscribed to this namespace's nftables notifications."""
    return subscribe(NETLINK_NETFILTER, memberships=(NFNLGRP_NFTABLES,), rcvbuf=1 << 20)


def drain(sock: Subscription, lost: set[str] | None = None) -> set[str]:
    """Read every pending notification; an overrun (ENOBUFS: some were lost) counts as the
    loss of every table we watch."""
    touched: set[str] = set()
    for data in sock.drain():
        if data is None:
            touched |= ALL
            if lost is not None:
                lost |= ALL
        else:
            touched |= backends_touched(data, lost)
    return touched
