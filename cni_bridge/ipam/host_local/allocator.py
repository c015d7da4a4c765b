"""The pure allocation strategy: which address to try next (no I/O).

The reference's round robin (``RangeIter``): start after the set's ``last_reserved_ip`` if it is
still in the set (else at the first ``rangeStart``), wrap from each ``rangeEnd`` to the next
range, skip gateways, stop after one full loop. The same store gives the same address as the
reference; unlike it, taken candidates are skipped without touching a file.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from cni_bridge.cni.result import IPAddress
from cni_bridge.ipam.host_local.ranges import Range, RangeSet


@dataclass(frozen=True)
class Pick:
    """The address and the range it came from (mask and gateway)."""

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


def plan_allocation(range_set: RangeSet, last_reserved: IPAddress | None,
                    taken: Container[IPAddress]) -> Pick | None:
    """The next free address, or None. Only an exhausted set (no larger than the number of
    reservations) is walked in full."""
    return next((p for p in candidates(range_set, last_reserved) if p.ip not in taken), None)


def plan_requested(
    range_sets: Sequence[RangeSet], requested: Sequence[IPAddress]
) -> tuple[dict[int, IPAddress], tuple[IPAddress, ...]]:
    """{set index: first requested address it contains}, and those no set took (ADD fails).
    The reference walks a Go map (arbitrary order); we keep the sources' order."""
    pending = list(requested)
    chosen: dict[int, IPAddress] = {}
    for index, range_set in enumerate(range_sets):
        ip = next((ip for ip in pending if range_set.contains(ip)), None)
        if ip is not None:
            chosen[index] = ip
            pending.remove(ip)
    return chosen, tuple(pending)
