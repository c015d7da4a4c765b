"""Flushing stale UDP conntrack entries for host ports.

A UDP sender that keeps talking to a host port keeps its conntrack entry, still pointing at the
previous container, until it expires. So after installing mappings, delete the entries whose
original destination port is a mapped UDP host port: best effort (logged, never raised), as in
the reference. Over ctnetlink (``conntrack -D -p udp --orig-port-dst P``): per family and port,
one dump the kernel filters (CTA_FILTER, Linux 5.9+; filtered here too), one delete per entry.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable

from cni_bridge.diag import logger
from cni_bridge.firewall.model import PortMapping
from cni_bridge.netlink import (
    NETLINK_NETFILTER,
    NLA_F_NESTED,
    NLM_F_DUMP,
    NetlinkSocket,
    attr,
    nested,
    nfgenmsg,
    parse_attrs,
)

log = logger(__name__)

# hand-packed: pyroute2's nfctsocket costs ~38 ms to import on every portmap call with UDP ports
# linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 1, 2
CTA_TUPLE_ORIG, CTA_ID, CTA_FILTER = 1, 12, 25
CTA_TUPLE_PROTO = 2
CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 1, 3
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
CTA_FILTER_FLAG_PROTO_NUM, CTA_FILTER_FLAG_PROTO_DST_PORT = 1 << 3, 1 << 5
IPPROTO_UDP = 17
AF_INET, AF_INET6 = 2, 10


def plan_udp_flush(entries: Iterable[PortMapping]) -> list[tuple[int, int]]:
    """(IP version, UDP host port) pairs to flush, in a stable order."""
    return sorted({(e.version, e.host_port) for e in entries if e.protocol == "udp"})


def _nfgen(version: int) -> bytes:
    return nfgenmsg(AF_INET if version == 4 else AF_INET6)


def dump_request(version: int, port: int) -> bytes:
    """A conntrack dump of `version` filtered by UDP and original destination port `port`."""
    proto = nested(CTA_TUPLE_PROTO, attr(CTA_PROTO_NUM, bytes([IPPROTO_UDP])),
                   attr(CTA_PROTO_DST_PORT, struct.pack("!H", port)))
    flags = CTA_FILTER_FLAG_PROTO_NUM | CTA_FILTER_FLAG_PROTO_DST_PORT
    return (_nfgen(version) + nested(CTA_TUPLE_ORIG, proto)
            + nested(CTA_FILTER, attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", flags)),
                     attr(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0))))


def matching_deletes(version: int, port: int, replies: Iterable[bytes]) -> list[bytes]:
    """Delete requests for the dumped entries that really are UDP to `port` (a kernel without
    dump filters sends them all), each naming its entry by original tuple and id."""
    deletes = []
    for body in replies:
        found = parse_attrs(body[4:])
        tuple_orig = found.get(CTA_TUPLE_ORIG)
        if tuple_orig is None:
            continue
        proto = parse_attrs(parse_attrs(tuple_orig).get(CTA_TUPLE_PROTO, b""))
        if (proto.get(CTA_PROTO_NUM) != bytes([IPPROTO_UDP])
                or proto.get(CTA_PROTO_DST_PORT) != struct.pack("!H", port)):
            continue
        request = _nfgen(version) + attr(CTA_TUPLE_ORIG | NLA_F_NESTED, tuple_orig)
        if CTA_ID in found:
            request += attr(CTA_ID, found[CTA_ID])
        deletes.append(request)
    return deletes


def flush_udp_conntrack(entries: Iterable[PortMapping]) -> int:
    """Delete UDP conntrack entries for the mapped host ports; returns how many were deleted."""
    keys = plan_udp_flush(entries)
    if not keys:
        return 0
    get = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
    delete = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
    total = 0
    try:
        with NetlinkSocket(NETLINK_NETFILTER) as nl:
            for version, port in keys:
                dumped = [body for _, body in nl.request(get, dump_request(version, port),
                                                         NLM_F_DUMP)]
                for request in matching_deletes(version, port, dumped):
                    total += _delete(nl, delete, request)
    except OSError as exc:
        log.warning("cannot flush UDP conntrack entries of host ports %s: %s",
                    ", ".join(f"{p}/IPv{v}" for v, p in keys), exc)
    if total:
        log.info("deleted %d stale UDP conntrack entries", total)
    return total


def _delete(nl: NetlinkSocket, msg_type: int, request: bytes) -> int:
    try:
        nl.request(msg_type, request)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # expired or deleted meanwhile
            return 0
        raise
    return 1
