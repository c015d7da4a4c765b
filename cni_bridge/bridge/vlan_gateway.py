"""The gateway of a VLAN network (REFERENCE.md §2.2 step 6, the reference's layout).

With `vlan` set, a container's frames reach the bridge in that VLAN only, and the bridge device
itself is not in it: an address on the bridge would be unreachable. The gateway address goes on
`<bridge>.<vlan>` instead, one end of a veth pair whose other end is an access port of that VLAN
on the bridge. Like the bridge, it is shared by the network's containers and never removed.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from cni_bridge.bridge.config import IFNAME_MAX_BYTES, BridgeConfig, valid_ifname
from cni_bridge.bridge.wiring import attach_port
from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.net import links
from cni_bridge.net.model import LinkInfo, VethSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.sysctl import ensure_sysctl
from cni_bridge.net.veth import create_veth_pair


def gateway_link_name(cfg: BridgeConfig) -> str:
    name = f"{cfg.bridge}.{cfg.vlan}"
    if not valid_ifname(name):
        raise ConfigError(f'VLAN gateway interface name "{name}" is longer than '
                          f"{IFNAME_MAX_BYTES} bytes", "use a shorter bridge name")
    return name


def ensure_vlan_gateway(host: Netlink, cfg: BridgeConfig, br: LinkInfo) -> LinkInfo:
    """`<bridge>.<vlan>`, created (and its peer attached to the bridge) if missing."""
    name = gateway_link_name(cfg)
    link = links.find_link(host, name)
    if link is None:
        try:
            pair = create_veth_pair(host, host, VethSpec(ifname=name, mtu=cfg.mtu))
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
