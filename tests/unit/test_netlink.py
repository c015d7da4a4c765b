"""The netlink socket layer without a kernel: framing, error answers, and the request policy
(sequence numbers, DUMP_INTR retries, timeouts) against a scripted peer over a datagram
socketpair, which carries the same bytes a netlink socket would."""

from __future__ import annotations

import _socket
import errno
import socket
import struct
from collections.abc import Iterator

import pytest

from cni_bridge import netlink
from cni_bridge.netlink import (
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    KernelError,
    attr,
    nested,
    parse_attrs,
    parse_error,
)


def message(kind: int, seq: int, body: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def error_msg(code: int, text: bytes | None, flags: int, seq: int = 7) -> bytes:
    orig = struct.pack("=IHHII", 32, 16, 5, seq, 0)  # the echoed request header (capped)
    payload = struct.pack("=i", code) + orig
    if text is not None:
        payload += attr(1, text + b"\0")
    return message(2, seq, payload, flags)


def test_parse_error_ack() -> None:
    assert parse_error(error_msg(0, None, NLM_F_CAPPED), 0, 36, NLM_F_CAPPED) is None


def test_parse_error_with_extack_text() -> None:
    flags = NLM_F_CAPPED | NLM_F_ACK_TLVS
    data = error_msg(-errno.EEXIST, b"Device already exists", flags)
    err = parse_error(data, 0, len(data), flags)
    assert err is not None
    assert err.errno == errno.EEXIST and err.extack == "Device already exists"


def test_attributes_round_trip_with_padding_and_nesting() -> None:
    inner = attr(2, b"abc")  # 7 bytes: padded to 8
    assert len(inner) == 8
    outer = nested(5, inner, attr(3, b"\x01\x02\x03\x04"))
    found = parse_attrs(outer)
    assert list(found) == [5]  # the nested flag is not part of the type
    assert parse_attrs(found[5]) == {2: b"abc", 3: b"\x01\x02\x03\x04"}


def test_frames_walk_a_datagram_and_refuse_a_cut_one() -> None:
    data = message(16, 1, b"abcd") + message(3, 1)
    assert [(k, s) for _, _, k, _, s in netlink.frames(data)] == [(16, 1), (3, 1)]
    with pytest.raises(KernelError) as caught:
        list(netlink.frames(data + message(16, 2, b"abcd")[:18]))
    assert caught.value.errno == errno.EBADMSG


class UnixEnd(socket.socket):
    """A datagram socket taking the netlink options and address as no-ops."""

    def setsockopt(self, level: int, *args: object) -> None:  # type: ignore[override]
        if level != netlink.SOL_NETLINK:
            super().setsockopt(level, *args)  # type: ignore[call-overload]

    def bind(self, address: object) -> None:
        pass


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The kernel's end: what the test sends to it arrives as the socket's replies."""
    end, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours = UnixEnd(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=end.detach())

    def unix_open(protocol: int) -> _socket.socket:
        return ours

    monkeypatch.setattr(netlink, "_open", unix_open)
    with ours, kernel:
        yield kernel


def test_a_reply_to_an_earlier_request_is_skipped(peer: socket.socket) -> None:
    peer.send(message(16, 9, b"old!") + message(16, 1, b"new!") + error_msg(0, None, 0, seq=1))
    with netlink.NetlinkSocket(0) as nl:
        assert nl.request(16, b"", 0) == [(16, b"new!")]


def test_an_error_answer_raises_with_the_kernels_text(peer: socket.socket) -> None:
    peer.send(error_msg(-errno.ENOENT, b"No such table", NLM_F_CAPPED | NLM_F_ACK_TLVS, 1))
    with netlink.NetlinkSocket(0) as nl, pytest.raises(KernelError) as caught:
        nl.request(16, b"")
    assert caught.value.errno == errno.ENOENT and caught.value.extack == "No such table"


def test_an_interrupted_dump_is_sent_again(peer: socket.socket) -> None:
    peer.send(message(16, 1, b"half", NLM_F_DUMP_INTR) + message(3, 1, flags=NLM_F_DUMP_INTR))
    peer.send(message(16, 2, b"all!") + message(3, 2))
    with netlink.NetlinkSocket(0) as nl:
        assert nl.request(18, b"", NLM_F_DUMP) == [(16, b"all!")]
    first, second = peer.recv(100), peer.recv(100)
    assert first[4:] != second[4:]  # a new sequence number...
    assert first[16:] == second[16:] and first[:4] == second[:4]  # ...for the same request


def test_a_dump_interrupted_every_time_fails(peer: socket.socket) -> None:
    for seq in range(1, netlink.DUMP_ATTEMPTS + 1):
        peer.send(message(3, seq, flags=NLM_F_DUMP_INTR))
    with netlink.NetlinkSocket(0) as nl, pytest.raises(KernelError) as caught:
        nl.request(18, b"", NLM_F_DUMP)
    assert caught.value.errno == errno.EINTR


def test_a_silent_kernel_times_out(peer: socket.socket) -> None:
    with netlink.NetlinkSocket(0, timeout=0.05) as nl, pytest.raises(TimeoutError):
        nl.request(16, b"")


def test_a_subscription_drains_without_blocking() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    events = netlink.Subscription(ours)
    with ours, kernel:
        assert not events.wait(0) and events.drain() == []
        kernel.send(b"one")
        kernel.send(b"two")
        assert events.wait(1.0) and events.drain() == [b"one", b"two"]
