"""Link wiring: the bridge, the veth pair and the bridge port (REFERENCE.md §2.2 steps 2-3),
and the VLAN gateway."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace

from cni_bridge.bridge.config import IFNAME_MAX_BYTES, BridgeConfig, valid_ifname
from cni_bridge.bridge.undo import Undo
from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.diag import logger
from cni_bridge.net import bridge as nbridge
from cni_bridge.net import links, model
from cni_bridge.net.model import BridgeVlan, LinkInfo, VethPair
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.sysctl import ensure_sysctl
from cni_bridge.net.veth import create_veth_pair

log = logger(__name__)
ZERO_MAC = "00:00:00:00:00:00"


def random_mac() -> str:
    """A random unicast, locally administered MAC."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def ensure_bridge(host: Netlink, cfg: BridgeConfig) -> LinkInfo:
    spec = model.BridgeSpec(name=cfg.bridge, mtu=cfg.mtu, promisc=cfg.promisc_mode,
                            vlan_filtering=bool(cfg.vlan or cfg.vlan_trunk))
    br = nbridge.ensure_bridge(host, spec)
    # Router advertisements must not configure the bridge; best effort like the reference.
    # No DAD on the bridge either: while its link-local address is tentative, the first IPv6
    # packets the host routes to a new container are lost.
    with contextlib.suppress(CniError):
        ensure_sysctl(f"net/ipv6/conf/{cfg.bridge}/accept_ra", 0)
        ensure_sysctl(f"net/ipv6/conf/{cfg.bridge}/accept_dad", 0)
    if not br.is_up:
        links.set_link_up(host, br.index)
    # Pin the MAC before any port joins: an unpinned bridge takes the lowest port MAC and
    # changes it as containers come and go, breaking every neighbour entry pointing at the
    # gateway (USERS.md item 13). A portless unpinned bridge reads as all zeros.
    mac = br.mac if br.mac and br.mac != ZERO_MAC else random_mac()
    links.set_mac(host, br.index, mac)
    return links.get_link(host, br.index) if mac != br.mac else br


def port_vlans(cfg: BridgeConfig) -> list[BridgeVlan]:
    """Access VLAN (pvid+untagged) and trunk VLANs (tagged); a trunk alone makes VID 1 native."""
    vlans: list[BridgeVlan] = []
    if cfg.vlan:
        vlans.append(BridgeVlan(cfg.vlan, pvid=True, untagged=True))
    elif cfg.vlan_trunk:
        vlans.append(BridgeVlan(1, pvid=True, untagged=True))
    vlans.extend(BridgeVlan(vid) for vid in cfg.vlan_trunk if vid != cfg.vlan)
    return vlans


def attach_port(host: Netlink, cfg: BridgeConfig, br: LinkInfo, port: LinkInfo) -> None:
    links.set_master(host, port.index, br.index)
    if port.mtu < br.mtu:
        # Unless its MTU was set by hand, the kernel lowers the bridge to its smallest port,
        # for every container: say so (USERS.md item 15).
        now = links.get_link(host, br.index).mtu
        if now < br.mtu:
            log.warning('bridge "%s" MTU lowered from %d to %d by port %s', br.name, br.mtu,
                        now, port.name)
    if cfg.hairpin_mode or cfg.port_isolation:
        flags = model.BridgePortFlags(hairpin=cfg.hairpin_mode, isolated=cfg.port_isolation)
        nbridge.set_bridge_port_flags(host, port.index, flags)
    vlans = port_vlans(cfg)
    if vlans:
        if not cfg.preserve_default_vlan:
            existing = nbridge.get_bridge_vlans(host, port.index)
            if existing:
                nbridge.remove_bridge_vlans(host, port.index, existing)
        nbridge.add_bridge_vlans(host, port.index, vlans)


def ensure_veth(
    host: Netlink, container: Netlink, cfg: BridgeConfig, br: LinkInfo, ifname: str, undo: Undo
) -> VethPair:
    spec = model.VethSpec(ifname=ifname, mtu=cfg.mtu, mac=cfg.mac or None)
    pair = create_veth_pair(host, container, spec)
    # Deleting the host end removes the container end with it.
    undo.push(f"remove host veth {pair.host.name}",
              lambda: links.remove_link(host, pair.host.index))
    with contextlib.suppress(CniError):
        ensure_sysctl(f"net/ipv6/conf/{pair.host.name}/accept_ra", 0)
    attach_port(host, cfg, br, pair.host)
    links.set_link_up(host, pair.host.index)
    return pair


def gateway_link_name(cfg: BridgeConfig) -> str:
    name = f"{cfg.bridge}.{cfg.vlan}"
    if not valid_ifname(name):
        raise ConfigError(f'VLAN gateway interface name "{name}" is longer than '
                          f"{IFNAME_MAX_BYTES} bytes", "use a shorter bridge name")
    return name


def ensure_vlan_gateway(host: Netlink, cfg: BridgeConfig, br: LinkInfo) -> LinkInfo:
    """`<bridge>.<vlan>`, created (and its peer attached to the bridge) if missing.

    With `vlan` set the bridge device is not in the containers' VLAN, so an address on it
    would be unreachable: the gateway goes on this veth end, the other an access port of that
    VLAN (the reference's layout). Shared by the network, like the bridge: never removed."""
    name = gateway_link_name(cfg)
    link = links.find_link(host, name)
    if link is None:
        try:
            pair = create_veth_pair(host, host, model.VethSpec(ifname=name, mtu=cfg.mtu))
        except CniError:
            link = links.find_link(host, name)  # a concurrent ADD created it first
            if link is None:
                raise
        else:
            # An access port of this VLAN only: no trunk, no hairpin, never isolated.
            port_cfg = replace(cfg, vlan_trunk=(), preserve_default_vlan=False,
                               hairpin_mode=False, port_isolation=False)
            attach_port(host, port_cfg, br, pair.host)
            links.set_link_up(host, pair.host.index)
            with contextlib.suppress(CniError):
                ensure_sysctl(f"net/ipv6/conf/{name}/accept_ra", 0)
            link = pair.container
    if link.kind != "veth":
        raise CniError(f'"{name}" already exists but is not a veth',
                       f"it is a {link.kind or 'device'}; the VLAN gateway needs the name")
    if not link.is_up:
        links.set_link_up(host, link.index)
    return links.get_link(host, link.index)
