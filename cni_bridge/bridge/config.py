"""The bridge plugin's configuration, parsed once into a frozen dataclass (REFERENCE.md §2.1)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cni_bridge.cni.args import parse_cni_args
from cni_bridge.cni.env import IFNAMSIZ
from cni_bridge.cni.errors import ConfigError
from cni_bridge.cni.fields import get_bool, get_int, get_list, get_obj, get_str
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import DNS, IPNetwork, parse_dns

DEFAULT_BRIDGE = "cni0"
MASQ_BACKENDS = ("iptables", "nftables")
# CNI_ARGS keys the bridge understands; host-local's IP= is read by the IPAM layer.
BRIDGE_ARGS = frozenset({"MAC"})
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
# What the kernel accepts (dev_valid_name): 1-15 bytes, no "/", ":", whitespace or NUL.
_IFNAME_RE = re.compile(r"[^/:\s\x00]{1,15}")
IFNAME_MAX_BYTES = IFNAMSIZ - 1
NON_MASQUERADE_KEY = "nonMasqueradeCIDRs"


def valid_ifname(name: str) -> bool:
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: not a kernel name
        return False
    return (size <= IFNAME_MAX_BYTES and _IFNAME_RE.fullmatch(name) is not None
            and name not in (".", ".."))


@dataclass(frozen=True)
class BridgeConfig:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    ip_masq_backend: str | None = None
    mtu: int = 0
    hairpin_mode: bool = False
    promisc_mode: bool = False
    vlan: int = 0
    vlan_trunk: tuple[int, ...] = ()
    preserve_default_vlan: bool = False
    macspoofchk: bool = False
    enable_dad: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    ipspoofchk: bool = False  # pins addresses too; forces macspoofchk on
    isolate_networks: bool = False
    non_masquerade_cidrs: tuple[IPNetwork, ...] = ()  # ipMasq leaves these destinations alone
    ipam_type: str = ""
    dns: DNS = DNS()
    mac: str = ""

    @property
    def l3(self) -> bool:
        return bool(self.ipam_type)


def parse_trunk(items: list[Any]) -> tuple[int, ...]:
    """``vlanTrunk`` entries are ``{id}`` or ``{minID, maxID}``; IDs 1-4094."""
    vids: set[int] = set()
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError("vlanTrunk entries must be objects", repr(item))
        has_min, has_max = "minID" in item, "maxID" in item
        if has_min != has_max:
            raise ConfigError("minID and maxID should be configured simultaneously", repr(item))
        if has_min:
            lo = get_int(item, "minID", lo=1, hi=4094, where="vlanTrunk.")
            hi = get_int(item, "maxID", lo=1, hi=4094, where="vlanTrunk.")
            if lo > hi:
                raise ConfigError("vlanTrunk minID is greater than maxID", f"{lo} > {hi}")
            vids.update(range(lo, hi + 1))
        if "id" in item:
            vids.add(get_int(item, "id", lo=1, hi=4094, where="vlanTrunk."))
        if not has_min and "id" not in item:
            raise ConfigError("vlanTrunk entry needs id or minID/maxID", repr(item))
    return tuple(sorted(vids))


def parse_networks(items: list[Any], key: str) -> tuple[IPNetwork, ...]:
    """A list of CIDR strings (network addresses, host bits clear), duplicates dropped."""
    nets: dict[IPNetwork, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{key} entries must be CIDR strings", f"got {item!r}"[:200])
        try:
            nets[ipaddress.ip_network(item.strip())] = None
        except ValueError:
            loose = loose_network(item)
            hint = f"; did you mean {loose}?" if loose else ""
            raise ConfigError(f"invalid {key} entry {item!r}",
                              f"expected a network such as 10.244.0.0/16{hint}") from None
    return tuple(nets)


def loose_network(text: str) -> str:
    """The network `text` names once its host bits are cleared ("" if it names none): the
    "did you mean" of an entry with host bits set."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return ""


def container_mac(req: Request) -> str:
    """MAC precedence, lowest to highest: CNI_ARGS MAC=, args.cni.mac, runtimeConfig.mac."""
    mac = parse_cni_args(req.env.args, BRIDGE_ARGS).get("MAC", "")
    cni_args = get_obj(get_obj(req.config, "args"), "cni")
    mac = get_str(cni_args, "mac", mac, where="args.cni.") or mac
    mac = get_str(req.runtime_config, "mac", mac, where="runtimeConfig.") or mac
    if mac and not _MAC_RE.match(mac):
        raise ConfigError("invalid container MAC address", f"{mac!r}")
    return mac.lower().replace("-", ":")


def parse_bridge_config(req: Request) -> BridgeConfig:
    c = req.config
    name = get_str(c, "bridge", DEFAULT_BRIDGE) or DEFAULT_BRIDGE
    if not valid_ifname(name):
        raise ConfigError("invalid bridge name", f"{name!r} is not a valid interface name")
    backend = get_str(c, "ipMasqBackend") or None
    if backend is not None and backend not in MASQ_BACKENDS:
        raise ConfigError(
            f'invalid ipMasqBackend value "{backend}" (must be "iptables", "nftables", or empty)'
        )
    is_default_gw = get_bool(c, "isDefaultGateway")
    cfg = BridgeConfig(
        bridge=name,
        is_gateway=get_bool(c, "isGateway") or is_default_gw,
        is_default_gateway=is_default_gw,
        force_address=get_bool(c, "forceAddress"),
        ip_masq=get_bool(c, "ipMasq"),
        ip_masq_backend=backend,
        mtu=get_int(c, "mtu", lo=0, hi=65535),
        hairpin_mode=get_bool(c, "hairpinMode"),
        promisc_mode=get_bool(c, "promiscMode"),
        vlan=get_int(c, "vlan", lo=0, hi=4094),
        vlan_trunk=parse_trunk(get_list(c, "vlanTrunk")),
        preserve_default_vlan=get_bool(c, "preserveDefaultVlan"),
        macspoofchk=get_bool(c, "macspoofchk") or get_bool(c, "ipspoofchk"),
        ipspoofchk=get_bool(c, "ipspoofchk"),
        isolate_networks=get_bool(c, "isolateNetworks"),
        non_masquerade_cidrs=parse_networks(get_list(c, NON_MASQUERADE_KEY), NON_MASQUERADE_KEY),
        enable_dad=get_bool(c, "enabledad"),
        disable_container_interface=get_bool(c, "disableContainerInterface"),
        port_isolation=get_bool(c, "portIsolation"),
        ipam_type=get_str(get_obj(c, "ipam"), "type", where="ipam."),
        dns=parse_dns(c.get("dns")),
        mac=container_mac(req),
    )
    if cfg.hairpin_mode and cfg.promisc_mode:
        raise ConfigError("cannot set hairpin mode and promiscuous mode at the same time")
    if cfg.disable_container_interface and cfg.l3:
        raise ConfigError("cannot use IPAM when DisableContainerInterface flag is set")
    if cfg.ipspoofchk and not cfg.l3:
        raise ConfigError("ipspoofchk needs IPAM: without addresses there is nothing to pin")
    if cfg.ipspoofchk and cfg.vlan_trunk:
        raise ConfigError("cannot use ipspoofchk on a VLAN trunk port (vlanTrunk)",
                          "the address check only reads untagged frames")
    return cfg
