"""Netlink requests with the standard library alone, for the few messages a portmap call sends
(a route lookup, conntrack dumps and deletes) without loading the netlink layer
(``cni_bridge.net`` and pyroute2's codec: about 15 ms of imports in the frozen build, for one
message). Messages are packed here with struct; attributes are (type, bytes).

A socket talks to the network namespace of the thread that opened it. Errors are `OSError`s
(`NetlinkError` when the kernel refuses a request, with its errno).
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
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
TIMEOUT = 10.0

_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_RECV_SIZE = 1 << 16


class NetlinkError(OSError):
    """The kernel answered a request with an error."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    body = _ATTR.pack(_ATTR.size + len(value), kind) + value
    return body + b"\0" * (_align(len(body)) - len(body))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def iter_attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The attributes of one level, in order, as (type without flag bits, value)."""
    pos = 0
    while pos + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, pos)
        if length < _ATTR.size:
            break
        yield kind & NLA_TYPE_MASK, data[pos + _ATTR.size:pos + length]
        pos += _align(length)


def nfgenmsg(family: int) -> bytes:
    """The header of every nfnetlink message: address family, NFNETLINK_V0, resource id 0."""
    return struct.pack("=BBH", family, 0, 0)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of one level, by type; later duplicates win."""
    return dict(iter_attrs(data))


class RawNetlink:
    """One netlink socket of `protocol`, in the calling thread's current namespace."""

    def __init__(self, protocol: int) -> None:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                              protocol)
        try:
            sock.settimeout(TIMEOUT)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        self._buf = bytearray(_RECV_SIZE)

    def __enter__(self) -> RawNetlink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._sock.close()

    def request(self, msg_type: int, payload: bytes, flags: int = 0) -> list[tuple[int, bytes]]:
        """Send one request (an acknowledgement asked for) and return each reply as (type,
        payload), up to the acknowledgement or the end of the dump."""
        self._seq += 1
        header = _HDR.pack(_HDR.size + len(payload), msg_type,
                           flags | NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self._sock.send(header + payload)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self._recv()
            pos = 0
            while pos + _HDR.size <= len(data):
                length, kind, _flags, seq, _port = _HDR.unpack_from(data, pos)
                if length < _HDR.size:
                    raise NetlinkError(errno.EBADMSG, "malformed netlink message")
                body = data[pos + _HDR.size:pos + length]
                pos += _align(length)
                if seq != self._seq:
                    continue  # a late answer to an earlier request
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                replies.append((kind, body))

    def _recv(self) -> bytes:
        """One datagram, however large (a peek tells its size first)."""
        size = self._sock.recv_into(self._buf, len(self._buf),
                                    _socket.MSG_PEEK | _socket.MSG_TRUNC)
        if size > len(self._buf):
            self._buf = bytearray(size)
        size = self._sock.recv_into(self._buf, len(self._buf))
        return bytes(self._buf[:size])
