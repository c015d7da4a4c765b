"""Address ranges parsed and canonicalised, and the range sets host-local allocates from.

Defaults as the reference's ``Range.Canonicalize``; stricter than it (each with a message naming
the value): a reversed range, a range on the network or IPv4 broadcast address, a gateway of the
other family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_interface
from typing import Any

from cni_bridge.cni.errors import ConfigError
from cni_bridge.cni.result import IPAddress, IPInterface, IPNetwork

Fail = Callable[[str], ConfigError]


@dataclass(frozen=True)
class Range:
    """One ``{subnet, rangeStart, rangeEnd, gateway}`` with every default resolved."""

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    def contains(self, ip: IPAddress) -> bool:
        return (ip.version == self.subnet.version
                and int(self.range_start) <= int(ip) <= int(self.range_end))

    def interface(self, ip: IPAddress) -> IPInterface:
        return ip_interface(f"{ip}/{self.subnet.prefixlen}")

    def allocatable(self) -> int:
        size = int(self.range_end) - int(self.range_start) + 1
        return size - 1 if self.contains(self.gateway) else size

    def overlaps(self, other: Range) -> bool:
        return self.subnet.version == other.subnet.version and (
            self.contains(other.range_start) or self.contains(other.range_end)
            or other.contains(self.range_start) or other.contains(self.range_end)
        )

    def __str__(self) -> str:
        return f"{self.range_start}-{self.range_end}"


@dataclass(frozen=True)
class RangeSet:
    """Ranges of one family; host-local hands out one address per range set."""

    ranges: tuple[Range, ...]

    @property
    def version(self) -> int:
        return self.ranges[0].subnet.version

    def range_for(self, ip: IPAddress) -> Range | None:
        return next((r for r in self.ranges if r.contains(ip)), None)

    def contains(self, ip: IPAddress) -> bool:
        return self.range_for(ip) is not None

    def is_gateway(self, ip: IPAddress) -> bool:
        r = self.range_for(ip)
        return r is not None and r.gateway == ip

    def allocatable(self) -> int:
        return sum(r.allocatable() for r in self.ranges)

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def parse_range_set(raw: tuple[Any, str], index: int) -> RangeSet:
    """One range set from (raw JSON list, where it came from); `index` is for messages."""
    items, where = raw

    def fail(why: str) -> ConfigError:
        return ConfigError(f"invalid range set {index}: {why}", f"in {where}")

    if not isinstance(items, list):
        raise fail(f"a range set must be a list of ranges, got {show(items)}")
    if not items:
        raise fail("empty range set")
    ranges = tuple(_range(item, fail) for item in items)
    if any(r.subnet.version != ranges[0].subnet.version for r in ranges):
        raise fail("mixed address families")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.overlaps(b):
                raise fail(f"subnets {a} and {b} overlap")
    return RangeSet(ranges)


def _range(item: Any, fail: Fail) -> Range:
    if not isinstance(item, Mapping):
        raise fail(f"a range must be a JSON object, got {show(item)}")
    subnet = _subnet(item.get("subnet"), fail)
    gateway = _ip_field(item, "gateway", fail) or subnet.network_address + 1
    if gateway.version != subnet.version:
        raise fail(f"gateway {gateway} is not of the same address family as subnet {subnet}")
    start = _ip_field(item, "rangeStart", fail)
    end = _ip_field(item, "rangeEnd", fail)
    for ip, label in ((start, "RangeStart"), (end, "RangeEnd")):
        if ip is not None and ip not in subnet:
            raise fail(f"{label} {ip} not in network {subnet}")
    start = start or subnet.network_address + 1
    end = end or _last_ip(subnet)
    _check_bounds(subnet, start, end, fail)
    return Range(subnet=subnet, range_start=start, range_end=end, gateway=gateway)


def _subnet(value: Any, fail: Fail) -> IPNetwork:
    if value is None or value == "":
        raise fail("the range has no subnet")
    if not isinstance(value, str) or value.count("/") != 1:
        raise fail(f"invalid subnet {show(value)}: expected an address/prefix-length")
    addr_text, prefix_text = value.split("/")
    try:
        addr = canonical(ip_address(addr_text))
        prefix = int(prefix_text) if prefix_text.isascii() and prefix_text.isdigit() else -1
    except ValueError:
        raise fail(f"invalid subnet {show(value)}: expected an address/prefix-length") from None
    bits = addr.max_prefixlen
    if not 0 <= prefix <= bits:
        raise fail(f"invalid subnet {show(value)}: prefix length must be 0-{bits}")
    if prefix > bits - 2:
        raise fail(f"Network {addr}/{prefix} too small to allocate from")
    network: IPNetwork = (IPv4Network if addr.version == 4 else IPv6Network)((addr, prefix), False)
    if network.network_address != addr:
        raise fail(
            f"Network has host bits set. For a subnet mask of length {prefix} "
            f"the network address is {network.network_address}"
        )
    return network


def _ip_field(item: Mapping[str, Any], key: str, fail: Fail) -> IPAddress | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    ip = parse_ip(value)
    if ip is None:
        raise fail(f"invalid {key} {show(value)}: not an IP address")
    return ip


def _check_bounds(subnet: IPNetwork, start: IPAddress, end: IPAddress, fail: Fail) -> None:
    """Stricter than the reference: no reversed range, no network or IPv4 broadcast address."""
    if start > end:  # type: ignore[operator]
        raise fail(f"rangeStart {start} is after rangeEnd {end}")
    if start == subnet.network_address:
        raise fail(f"rangeStart {start} is the network address of {subnet}")
    if subnet.version == 4 and end == subnet.broadcast_address:
        raise fail(f"rangeEnd {end} is the broadcast address of {subnet}")


def _last_ip(subnet: IPNetwork) -> IPAddress:
    last = subnet.broadcast_address
    return last - 1 if subnet.version == 4 else last


def parse_ip(value: Any, allow_prefix: bool = False) -> IPAddress | None:
    """An IP (or, where the reference accepts one, an IP/prefix whose prefix is ignored)."""
    if not isinstance(value, str):
        return None
    try:
        if allow_prefix and "/" in value:
            return canonical(ip_interface(value).ip)
        return canonical(ip_address(value))
    except ValueError:
        return None


def canonical(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is IPv4, as Go's To4() makes it."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."
