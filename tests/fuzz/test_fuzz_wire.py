"""The resident server's frames under fuzzing (serve/wire.py), where a peer's bytes first land.

Properties: any bytes split into frames, or a ProtocolError, nothing else; a frame of our
version encodes back to the same bytes; any fields round-trip; the worker's reading of any
REQUEST either gives a request or a ProtocolError.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_bridge.serve import wire
from cni_bridge.serve.server.worker import CallRequest
from tests.fuzz.conftest import fuzz_settings

KINDS = (wire.CALL, wire.STATUS, wire.ACCEPT, wire.REFUSE, wire.REQUEST, wire.RESULT)
fields = st.lists(st.one_of(st.binary(max_size=64), st.text(max_size=32),
                            st.integers(-2**31, 2**31 - 1)), max_size=8)


def altered(frame: bytes, at: int, byte: int | None) -> bytes:
    """`frame` with the byte at `at` (modulo its length) replaced by `byte`, unless None."""
    if byte is None:
        return frame
    at %= len(frame)
    return frame[:at] + bytes((byte,)) + frame[at + 1:]


# Random bytes alone almost never make a whole frame (a size within the limit, then that many
# bytes): frames of our encoder, one byte maybe altered, something after them, come too.
frames = st.builds(altered, st.builds(lambda kind, values, tail: wire.encode(kind, *values) + tail,
                                      st.sampled_from(KINDS), fields, st.binary(max_size=16)),
                   st.integers(0, 1 << 16), st.none() | st.integers(0, 255))


@fuzz_settings(1000)
@given(st.binary(max_size=256) | frames, st.integers(0, 300))
def test_any_bytes_are_a_frame_more_to_read_or_a_protocol_error(data: bytes, limit: int) -> None:
    try:
        split = wire.split_frame(data, limit)
    except wire.ProtocolError:
        return
    if split is None:
        return
    message, rest = split
    frame = data[:len(data) - len(rest)]
    if message.version == wire.VERSION:
        assert wire.encode(message.kind, *message.fields) == frame
    else:
        assert (message.kind, message.fields) == ("", [])


@fuzz_settings(500)
@given(st.sampled_from(KINDS), fields)
def test_fields_round_trip(kind: str, values: list[bytes | str | int]) -> None:
    split = wire.split_frame(wire.encode(kind, *values), wire.MAX_FRAME)
    assert split is not None and split[1] == b""
    message = split[0]
    assert (message.version, message.kind, len(message.fields)) == (wire.VERSION, kind,
                                                                    len(values))
    for index, value in enumerate(values):
        if isinstance(value, int):
            assert message.number(index) == value
        elif isinstance(value, str):
            assert message.text(index) == value
        else:
            assert message.field(index) == value


@fuzz_settings(500)
@given(fields)
def test_any_request_is_read_or_refused_as_a_protocol_error(values: list[bytes | str | int]
                                                            ) -> None:
    message = wire.decode(wire.encode(wire.REQUEST, *values)[4:])
    readable = len(message.fields) >= 4 and len(message.fields[1]) == 4  # umask: a number
    try:
        request = CallRequest.parse(message)
    except wire.ProtocolError:
        assert not readable
        return
    assert readable
    assert all("=" not in name and name for name in request.environ)
    assert 0 <= request.umask <= 0o777
    if request.stdin is None:
        with pytest.raises(OSError):
            request.read_stdin()
