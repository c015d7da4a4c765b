"""The pure allocation strategy: which address to try next. No I/O; the store is not touched.

Round robin as the reference does it (``RangeIter``): start just after the range set's
``last_reserved_ip`` when that address still lies in the set (else at the first range's
``rangeStart``), walk forward, wrap from each ``rangeEnd`` to the next range's ``rangeStart``
(cycling through the ranges), skip the gateway of the range being walked, and stop after one full
loop (the last reserved address itself is the final candidate). Given the same store contents the
same address comes out, which is what makes the two implementations interchangeable.

Unlike the reference, which tries an exclusive create on every candidate, the caller passes the
addresses already taken (any container answering ``in``), so no file is touched for a taken
candidate.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from cni_bridge.cni.result import IPAddress
from cni_bridge.ipam.host_local.ranges import Range, RangeSet


@dataclass(frozen=True)
class Pick:
    """A planned reservation: the address and the range it came from (mask and gateway)."""

    ip: IPAddress
    range: Range


def candidates(range_set: RangeSet, last_reserved: IPAddress | None) -> Iterator[Pick]:
    """Every allocatable address of the set, in the reference's round-robin order."""
    ranges = range_set.ranges
    start_range = range_set.range_for(last_reserved) if last_reserved is not None else None
    if start_range is not None and last_reserved is not None:
        idx, cur, first = ranges.index(start_range), int(last_reserved), None
    else:
        idx, cur, first = 0, int(ranges[0].range_start), int(ranges[0].range_start)
        if cur != int(ranges[0].gateway):
            yield Pick(ranges[0].range_start, ranges[0])
    version = ranges[0].subnet.version
    while True:
        r = ranges[idx]
        if cur == int(r.range_end):
            idx = (idx + 1) % len(ranges)
            r = ranges[idx]
            cur = int(r.range_start)
        else:
            cur += 1
        if first is None:
            first = cur
        elif cur == first:
            return
        if cur != int(r.gateway):
            yield Pick(_address(cur, version), r)


def _address(value: int, version: int) -> IPAddress:
    return IPv4Address(value) if version == 4 else IPv6Address(value)


def free_count(range_set: RangeSet, taken: Collection[IPAddress]) -> int:
    """How many addresses of the set the round robin could still hand out."""
    used = 0
    for ip in taken:
        r = range_set.range_for(ip)
        used += r is not None and ip != r.gateway
    return max(range_set.allocatable() - used, 0)


def plan_allocation(
    range_set: RangeSet, last_reserved: IPAddress | None, taken: Container[IPAddress]
) -> Pick | None:
    """The next free address in round-robin order, or None when the set is exhausted.

    The walk stops at the first free address, so it visits at most the run of taken addresses
    after the cursor (plus gateways); only an exhausted set is walked in full, and a set can only
    be exhausted when it is no larger than the number of reservations.
    """
    return next((p for p in candidates(range_set, last_reserved) if p.ip not in taken), None)


def plan_requested(
    range_sets: Sequence[RangeSet], requested: Sequence[IPAddress]
) -> tuple[dict[int, IPAddress], tuple[IPAddress, ...]]:
    """Give each range set the first requested address it contains.

    Returns {set index: address} and the requested addresses no set took (an error for ADD).
    The reference walks a Go map here (arbitrary order); we keep the order the sources gave.
    """
    pending = list(requested)
    chosen: dict[int, IPAddress] = {}
    for index, range_set in enumerate(range_sets):
        ip = next((ip for ip in pending if range_set.contains(ip)), None)
        if ip is not None:
            chosen[index] = ip
            pending.remove(ip)
    return chosen, tuple(pending)
