"""Plain data in and out of the netlink operations: frozen dataclasses, ``ipaddress`` types."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from cni_bridge.netlink import IFF_UP as IFF_UP

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Interface flags (linux/if.h) that callers look at.
IFF_PROMISC = 0x100

# Address flags (linux/if_addr.h).
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

# Address / route scopes (linux/rtnetlink.h).
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254


class OperState(enum.Enum):
    UNKNOWN = "UNKNOWN"
    NOTPRESENT = "NOTPRESENT"
    DOWN = "DOWN"
    LOWERLAYERDOWN = "LOWERLAYERDOWN"
    TESTING = "TESTING"
    DORMANT = "DORMANT"
    UP = "UP"


@dataclass(frozen=True)
class BridgePortInfo:
    """Bridge-port attributes of a link enslaved to a bridge (IFLA_INFO_SLAVE_DATA)."""

    hairpin: bool
    isolated: bool
    state: int  # BR_STATE_*: 0 disabled .. 3 forwarding


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth", ...; None for lo and plain devices
    mac: str | None  # lowercase "aa:bb:cc:dd:ee:ff"
    mtu: int
    flags: int  # IFF_* bits
    oper_state: OperState
    master_index: int | None = None
    peer_index: int | None = None  # IFLA_LINK: for a veth, the peer's index (maybe in another ns)
    link_netnsid: int | None = None  # set when the peer lives in another namespace
    vlan_filtering: bool | None = None  # bridges only
    port: BridgePortInfo | None = None  # bridge ports only

    @property
    def is_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)


@dataclass(frozen=True)
class AddressInfo:
    index: int
    interface: IPInterface  # address with its prefix length, e.g. 10.88.0.1/16
    scope: int
    flags: int  # IFA_F_* bits (from IFA_FLAGS when present)
    label: str | None = None

    @property
    def address(self) -> IPAddress:
        return self.interface.ip

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dad_failed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)


@dataclass(frozen=True)
class NextHop:
    gateway: IPAddress | None
    index: int | None


@dataclass(frozen=True)
class RouteInfo:
    dst: IPNetwork  # 0.0.0.0/0 or ::/0 for default routes
    gateway: IPAddress | None = None
    index: int | None = None  # output interface (RTA_OIF)
    priority: int | None = None  # metric
    table: int = RT_TABLE_MAIN
    scope: int = RT_SCOPE_UNIVERSE
    protocol: int = 0
    type: int = 1  # RTN_UNICAST
    prefsrc: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    nexthops: tuple[NextHop, ...] = ()


@dataclass(frozen=True)
class RouteSpec:
    """A route to add or remove. ``scope`` None means: link when there is no gateway (IPv4)."""

    dst: IPNetwork
    gateway: IPAddress | None = None
    index: int | None = None
    priority: int | None = None
    table: int | None = None  # None: main
    scope: int | None = None
    mtu: int | None = None
    advmss: int | None = None
    src: IPAddress | None = None
    protocol: int | None = None  # routing protocol (None: "boot" on add, any on delete)


@dataclass(frozen=True)
class BridgeSpec:
    """The bridge to create or confirm. ``mtu`` and ``vlan_filtering`` apply only on creation."""

    name: str
    mtu: int = 0  # 0: kernel default
    vlan_filtering: bool = False
    promisc: bool = False


@dataclass(frozen=True)
class VethSpec:
    """``host_name`` None: a random ``veth`` + 8 hex chars, retried on a name clash. ``mtu``
    (0: kernel default) applies to both ends, ``mac`` to the container end only."""

    ifname: str
    mtu: int = 0
    mac: str | None = None
    host_name: str | None = None


@dataclass(frozen=True)
class VethPair:
    host: LinkInfo
    container: LinkInfo


@dataclass(frozen=True)
class BridgePortFlags:
    """Bridge-port flags to set on a port; None leaves a flag unchanged."""

    hairpin: bool | None = None
    isolated: bool | None = None


@dataclass(frozen=True)
class BridgeVlan:
    """A VLAN (or the range ``vid``..``vid_end``) on a bridge port."""

    vid: int
    vid_end: int | None = None
    pvid: bool = False
    untagged: bool = False

    def __post_init__(self) -> None:
        last = self.vid if self.vid_end is None else self.vid_end
        if not 1 <= self.vid <= last <= 4094:
            raise ValueError(f"invalid VLAN range {self.vid}..{last} (IDs are 1-4094)")
        if self.pvid and last != self.vid:
            raise ValueError(f"a VLAN range ({self.vid}-{last}) cannot be the PVID")
