"""The narrow data objects the plugins hand to a firewall backend (no iptables, no nftables)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from cni_bridge.cni.errors import ConfigError
from cni_bridge.firewall import names

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Protocol = Literal["tcp", "udp", "sctp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp", "sctp")
LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")


@dataclass(frozen=True, order=True)
class Owner:
    network: str
    container_id: str
    ifname: str

    @property
    def tag(self) -> str:
        return names.owner_tag(self.network, self.ifname, self.container_id)

    @property
    def tag_hash(self) -> str:
        return names.instance_hash(self.network, self.ifname, self.container_id)

    @property
    def id(self) -> int:
        return names.owner_id(self.network, self.ifname, self.container_id)

    def __str__(self) -> str:
        return f"container {self.container_id} ({self.network}/{self.ifname})"


@dataclass(frozen=True)
class MasqEntry:
    """Masquerade from `address` to anything outside `subnet`, `non_masquerade` (networks of the
    other family dropped: one list serves a dual-stack container) and multicast."""

    owner: Owner
    address: IPInterface
    subnet: IPNetwork
    non_masquerade: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if self.subnet.version != self.address.version:
            raise ConfigError(f"masquerade subnet {self.subnet} is not of the family of "
                              f"{self.address}")
        same_family = tuple(dict.fromkeys(
            n for n in self.non_masquerade if n.version == self.address.version))
        object.__setattr__(self, "non_masquerade", same_family)

    @classmethod
    def of(cls, owner: Owner, address: IPInterface,
           non_masquerade: Iterable[IPNetwork] = ()) -> MasqEntry:
        return cls(owner, address, address.network, tuple(non_masquerade))

    @property
    def version(self) -> int:
        return self.address.version


@dataclass(frozen=True)
class PortMapping:
    """One per family (no host IP: any local address). `container_ip` keeps its prefix: hairpin
    traffic from that whole subnet is masqueraded."""

    owner: Owner
    protocol: Protocol
    host_port: int
    container_ip: IPInterface
    container_port: int
    host_ip: IPAddress | None = None

    def __post_init__(self) -> None:
        if self.host_ip is not None and self.host_ip.is_unspecified:
            object.__setattr__(self, "host_ip", None)  # "", 0.0.0.0 and :: all mean "any"

    @property
    def version(self) -> int:
        return self.container_ip.version

    def describe(self) -> str:
        where = "*" if self.host_ip is None else (
            f"[{self.host_ip}]" if self.host_ip.version == 6 else str(self.host_ip))
        return f"{where}:{self.host_port}/{self.protocol}"


@dataclass(frozen=True)
class PortmapOptions:
    snat: bool = True
    masq_all: bool = False
    mark_masq_bit: int = names.DEFAULT_MARK_MASQ_BIT  # iptables only
    external_set_mark_chain: str | None = None  # iptables only
    conditions_v4: tuple[str, ...] = ()
    conditions_v6: tuple[str, ...] = ()

    def conditions(self, version: int) -> tuple[str, ...]:
        return self.conditions_v4 if version == 4 else self.conditions_v6

    @property
    def mark(self) -> str:
        value = 1 << self.mark_masq_bit
        return f"{value:#x}/{value:#x}"


def validate_mappings(entries: Iterable[PortMapping]) -> None:
    for e in entries:
        if e.protocol not in PROTOCOLS:
            raise ConfigError(f"port mapping {e.describe()}: unknown protocol {e.protocol!r}")
        for what, port in (("host", e.host_port), ("container", e.container_port)):
            if not 0 < port < 65536:
                raise ConfigError(f"port mapping {e.describe()}: invalid {what} port {port}")
        if e.host_ip is not None and e.host_ip.version != e.version:
            raise ConfigError(f"port mapping {e.describe()}: host IP family differs from "
                              f"container address {e.container_ip.ip}")
        if e.host_ip is not None and e.host_ip.version == 6 and e.host_ip.is_loopback:
            raise ConfigError(f"port mapping {e.describe()}: IPv6 loopback cannot be published "
                              "(IPv6 has no route_localnet)")


def validate_options(options: PortmapOptions) -> None:
    if not 0 <= options.mark_masq_bit <= 31:
        raise ConfigError(f"markMasqBit {options.mark_masq_bit} is not in 0-31")


def conditions_backend(tokens: Sequence[str]) -> Literal["iptables", "nftables"] | None:
    """Which backend a conditionsV4/V6 list is written for (the reference's rule)."""
    if not tokens:
        return None
    return "iptables" if tokens[0].startswith(("-", "!")) else "nftables"


def publishes_localhost(entry: PortMapping, options: PortmapOptions) -> bool:
    """Whether `entry` is reachable through 127.0.0.1 (needs route_localnet + loopback masq)."""
    if entry.version != 4 or not options.snat or options.masq_all:
        return False
    return entry.host_ip is None or entry.host_ip in LOOPBACK_V4


def needs_route_localnet(entries: Iterable[PortMapping], options: PortmapOptions) -> bool:
    return any(publishes_localhost(e, options) for e in entries)


_E = TypeVar("_E", MasqEntry, PortMapping)


def group_by_owner(entries: Iterable[_E]) -> dict[Owner, list[_E]]:
    out: dict[Owner, list[_E]] = {}
    for e in entries:
        out.setdefault(e.owner, []).append(e)
    return out


@dataclass(frozen=True)
class Pin:
    """What a container may claim: its MAC and its addresses (IPv6 link-locals included)."""

    mac: str
    ipv4: tuple[ipaddress.IPv4Address, ...]
    ipv6: tuple[ipaddress.IPv6Address, ...]


@dataclass(frozen=True)
class SpoofEntry:
    owner: Owner
    host_veth: str
    mac: str
    pin: Pin | None  # None: the MAC alone (macspoofchk)


@dataclass
class RuleSet:
    """Many attachments' entries in one backend (the healer's unit); spoof checks and isolated
    bridges are nftables rules whatever the backend."""

    masq: list[MasqEntry] = field(default_factory=list)
    ports: dict[PortmapOptions, list[PortMapping]] = field(default_factory=dict)
    spoof: list[SpoofEntry] = field(default_factory=list)
    isolate: list[str] = field(default_factory=list)  # bridges (and VLAN gateways)
