"""The one netlink socket layer (rtnetlink, nf_tables, conntrack, notifications): framing,
attributes, request sockets (`NetlinkSocket`) and multicast subscriptions (`subscribe`).

One policy for every protocol: an acknowledgement on every request, the kernel's text on
errors (`KernelError`, an `OSError`), a dump interrupted by a concurrent change sent again, no
wait without a bound. Message codecs live with their users. One module, over the standard
library's C modules only: a plugin call pays for each module it loads (the import budgets).
"""

from __future__ import annotations

# The C module: socket.py builds its enums on import (~2 ms per plugin call); this needs none.
import _socket
import errno
import os
import struct
from collections.abc import Iterator
from types import TracebackType

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED = 0x100  # on an error: the original request is cut to its header
NLM_F_ACK_TLVS = 0x200  # on an error: extended-ack attributes follow
NLM_F_EXCL = 0x200
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_ERRNO = struct.Struct("=i")


class KernelError(OSError):
    """A request answered with an error; ``extack`` is the kernel's text, if it gave one."""

    def __init__(self, code: int, extack: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.extack = extack


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    body = _ATTR.pack(_ATTR.size + len(value), kind) + value
    return body + b"\0" * (align(len(body)) - len(body))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def iter_attrs(data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
    """The attributes of one level, in order, as (type without flag bits, value)."""
    pos = 0
    while pos + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, pos)
        if length < _ATTR.size:
            break
        yield kind & NLA_TYPE_MASK, bytes(data[pos + _ATTR.size:pos + length])
        pos += align(length)


def parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    return dict(iter_attrs(data))


def nfgenmsg(family: int) -> bytes:
    """The header of every nfnetlink message: address family, NFNETLINK_V0, resource id 0."""
    return struct.pack("=BBH", family, 0, 0)


def frames(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """The messages of one datagram as (offset, length, type, flags, sequence)."""
    offset = 0
    while offset + HDR.size <= len(data):
        length, kind, flags, seq, _port = HDR.unpack_from(data, offset)
        if length < HDR.size or offset + length > len(data):
            raise KernelError(errno.EBADMSG, "malformed netlink message")
        yield offset, length, kind, flags, seq
        offset += align(length)


def parse_error(data: bytes | memoryview, offset: int, length: int,
                flags: int) -> KernelError | None:
    """None for an acknowledgement (error 0), else the error with its extended-ack text."""
    (code,) = _ERRNO.unpack_from(data, offset + HDR.size)
    if code == 0:
        return None
    extack = ""
    if flags & NLM_F_ACK_TLVS:
        orig = offset + HDR.size + _ERRNO.size
        (orig_len,) = struct.unpack_from("=I", data, orig)
        start = orig + (HDR.size if flags & NLM_F_CAPPED else align(orig_len))
        text = parse_attrs(data[start:offset + length]).get(NLMSGERR_ATTR_MSG, b"")
        extack = text.split(b"\0", 1)[0].decode(errors="replace")
    return KernelError(-code, extack)


# --- rtnetlink numbers (linux/rtnetlink.h, if_link.h, if_addr.h) ------------------------------

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELNEIGH = 29

# Multicast groups, as a bind() bitmask (RTMGRP_*)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400

IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP = 0x1

IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
#                                      type, flags


# --- sockets ----------------------------------------------------------------------------------

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
TIMEOUT = 10.0  # seconds without an answer before a request fails
RECV_SIZE = 1 << 16
DUMP_ATTEMPTS = 5


def _open(protocol: int) -> _socket.socket:
    return _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)


class NetlinkSocket:
    """A socket of `protocol` for requests. `strict` asks rtnetlink to honour dump filters
    (ifindex, table, master) and to refuse what it cannot."""

    def __init__(self, protocol: int, strict: bool = False, timeout: float = TIMEOUT) -> None:
        sock = _open(protocol)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            if strict:
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.settimeout(timeout)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def request(self, msg_type: int, payload: bytes, flags: int = 0) -> list[tuple[int, bytes]]:
        """Send one request and return each reply as (type, payload), up to the
        acknowledgement or the end of the dump."""
        return [(HDR.unpack_from(f)[1], f[HDR.size:])
                for f in self.exchange(msg_type, payload, flags)]

    def exchange(self, msg_type: int, payload: bytes, flags: int = 0) -> list[bytes]:
        """`request`, with each reply whole (its header included)."""
        for _ in range(DUMP_ATTEMPTS):  # only a dump is ever interrupted
            self._seq += 1
            self._sock.send(HDR.pack(HDR.size + len(payload), msg_type,
                                     flags | NLM_F_REQUEST | NLM_F_ACK, self._seq, 0) + payload)
            replies, interrupted = self._collect(self._seq)
            if not interrupted:
                return replies
        raise KernelError(errno.EINTR, "the dump kept being interrupted by concurrent changes")

    def _collect(self, seq: int) -> tuple[list[bytes], bool]:
        replies: list[bytes] = []
        interrupted = False
        while True:
            data = self._recv()
            for offset, length, kind, flags, reply_seq in frames(data):
                if reply_seq != seq:
                    continue  # a late answer to an earlier request
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if kind == NLMSG_ERROR:
                    error = parse_error(data, offset, length, flags)
                    if error is not None:
                        raise error
                    return replies, interrupted
                if kind == NLMSG_DONE:
                    return replies, interrupted
                if kind not in (NLMSG_NOOP, NLMSG_OVERRUN):
                    replies.append(bytes(data[offset:offset + length]))

    def _recv(self) -> memoryview:
        """One datagram, however large (a peek tells its size first)."""
        size = self._sock.recv_into(self._buf, len(self._buf),
                                    _socket.MSG_PEEK | _socket.MSG_TRUNC)
        if size > len(self._buf):
            self._buf = bytearray(size)
        size = self._sock.recv_into(self._buf, len(self._buf))
        return memoryview(self._buf)[:size]


def subscribe(protocol: int, groups: int = 0, memberships: tuple[int, ...] = (),
              rcvbuf: int = 0) -> Subscription:
    """A socket of `protocol` joined to multicast `groups` (a bitmask of groups 1-32) and
    `memberships` (group numbers)."""
    sock = _open(protocol)
    try:
        if rcvbuf:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))
        for group in memberships:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    except BaseException:
        sock.close()
        raise
    return Subscription(sock)


class Subscription:
    """Notifications read without blocking from a subscribed socket (see `subscribe`)."""

    def __init__(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` s for a notification. True if one came."""
        import select  # only waits need it: not loaded on every call

        return bool(select.select([self._sock], [], [], max(timeout, 0.0))[0])

    def drain(self) -> list[bytes | None]:
        """The datagrams pending, without blocking; None where some were lost (ENOBUFS: the
        receive buffer overflowed)."""
        out: list[bytes | None] = []
        while True:
            try:
                data = self._sock.recv(RECV_SIZE)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                out.append(None)
                continue
            if not data:
                return out
            out.append(data)
