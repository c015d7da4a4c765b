"""A small synchronous rtnetlink socket: send one request, collect its replies.

pyroute2 only encodes and decodes messages here (see ``_codec``); this module owns the socket, so
no asyncio loop, thread or helper process is involved. The socket belongs to the network namespace
of the thread that created it (``Netlink.for_netns`` creates it while setns'd into the target).

Failures raise ``KernelError`` (an ``OSError`` carrying the kernel's extended-ack text); the
operation modules translate them into ``CniError`` with a message naming the object.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import struct
from typing import Any

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

# rtnetlink message types (linux/rtnetlink.h)
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELNEIGH = 29

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSGERR_ATTR_MSG = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")
_RECV_SIZE = 1 << 16
_DUMP_RETRIES = 5


class KernelError(OSError):
    """A netlink request answered with an error; ``extack`` is the kernel's text, if any."""

    def __init__(self, code: int, extack: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.extack = extack


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_error(
    data: bytes | bytearray | memoryview, offset: int, length: int, flags: int
) -> KernelError | None:
    """Decode an NLMSG_ERROR payload: None for an ACK (error 0), else the error and its text."""
    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
    if code == 0:
        return None
    extack = ""
    if flags & NLM_F_ACK_TLVS:
        orig = offset + _HDR.size + 4
        (orig_len,) = struct.unpack_from("=I", data, orig)
        pos = orig + (_HDR.size if flags & NLM_F_CAPPED else _align(orig_len))
        end = offset + length
        while pos + _ATTR.size <= end:
            alen, atype = _ATTR.unpack_from(data, pos)
            if alen < _ATTR.size:
                break
            if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
                raw = bytes(data[pos + _ATTR.size : pos + alen])
                extack = raw.split(b"\0", 1)[0].decode(errors="replace")
            pos += _align(alen)
    return KernelError(-code, extack)


def encode_request(msg: Any, msg_type: int, flags: int, seq: int) -> bytes:
    """The wire form of ``msg`` as a request (ACK always asked for)."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags | NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.reset()
    msg.encode()
    return bytes(msg.data)


class RtnlSocket:
    """NETLINK_ROUTE socket in the calling thread's current namespace."""

    def __init__(self, groups: int = 0) -> None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            # Strict checking makes the kernel honour dump filters (ifindex, table, master).
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.bind((0, groups))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = itertools.count(1)
        self._buf = bytearray(_RECV_SIZE)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send ``msg`` (a pyroute2 message) with an ACK requested; return the data replies.

        Replies are decoded as ``type(msg)``. A dump (``NLM_F_DUMP``) interrupted by a concurrent
        change (NLM_F_DUMP_INTR) is retried a few times.
        """
        for _ in range(_DUMP_RETRIES):
            seq = next(self._seq)
            self._sock.send(encode_request(msg, msg_type, flags, seq))
            replies, interrupted = self._collect(type(msg), seq)
            if not interrupted:
                return replies
        raise KernelError(errno.EINTR, "dump kept being interrupted by concurrent changes")

    def _recv(self) -> memoryview:
        size = self._sock.recv_into(self._buf, len(self._buf), socket.MSG_PEEK | socket.MSG_TRUNC)
        if size > len(self._buf):
            self._buf = bytearray(size)
        size = self._sock.recv_into(self._buf, len(self._buf))
        return memoryview(self._buf)[:size]

    def _collect(self, cls: Any, seq: int) -> tuple[list[Any], bool]:
        replies: list[Any] = []
        interrupted = False
        while True:
            data = self._recv()
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    raise KernelError(errno.EBADMSG, "malformed netlink message")
                if mseq != seq:  # a stale answer to an earlier request: skip it
                    offset += _align(length)
                    continue
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_ERROR:
                    error = parse_error(data, offset, length, mflags)
                    if error is not None:
                        raise error
                    return replies, interrupted
                if mtype == NLMSG_DONE:
                    return replies, interrupted
                if mtype not in (NLMSG_NOOP, NLMSG_OVERRUN):
                    reply = cls(bytes(data[offset : offset + length]))
                    reply.decode()
                    replies.append(reply)
                offset += _align(length)


class EventSocket:
    """A socket subscribed to rtnetlink multicast groups, used only as a wake-up source."""

    def __init__(self, groups: int) -> None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        try:
            sock.bind((0, groups))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        self._sock.close()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for any event; drain what arrived. True if something did."""
        readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not readable:
            return False
        while True:
            try:
                self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return True
            except OSError as exc:  # ENOBUFS: events were lost; the caller re-reads state anyway
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
