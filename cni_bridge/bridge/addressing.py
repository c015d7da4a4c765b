"""L3 configuration: the container interface, the gateway on the bridge, forwarding
(REFERENCE.md §2.2 step 6)."""

from __future__ import annotations

import contextlib

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.bridge.plan import L3Plan
from cni_bridge.bridge.wiring import ensure_vlan_gateway
from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.cni.result import IPAddress, IPInterface
from cni_bridge.diag import logger
from cni_bridge.net import addresses, links, neighbours, routes
from cni_bridge.net.model import AddressInfo, LinkInfo, RouteSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import NetnsHandle
from cni_bridge.net.sysctl import ensure_sysctl

log = logger(__name__)

FORWARDING_SYSCTL = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def container_sysctls(ns: NetnsHandle, ifname: str, cfg: BridgeConfig, has_v6: bool) -> None:
    """DAD and ARP behaviour of the container interface; best effort like the reference."""
    wanted: list[tuple[str, int]] = [(f"net/ipv4/conf/{ifname}/arp_notify", 1)]
    if has_v6:
        wanted += [
            ("net/ipv6/conf/lo/disable_ipv6", 0),
            (f"net/ipv6/conf/{ifname}/disable_ipv6", 0),
            (f"net/ipv6/conf/{ifname}/keep_addr_on_down", 1),
            (f"net/ipv6/conf/{ifname}/accept_dad", 1 if cfg.enable_dad else 0),
        ]
        if cfg.enable_dad:
            wanted.append((f"net/ipv6/conf/{ifname}/enhanced_dad", 1))
    for key, value in wanted:
        try:
            ensure_sysctl(key, value, netns=ns)
        except CniError as exc:
            log.warning("%s", exc)


def configure_container(
    cont: Netlink, ns: NetnsHandle, link: LinkInfo, cfg: BridgeConfig, plan: L3Plan
) -> None:
    has_v6 = any(ip.address.version == 6 for ip in plan.ips)
    container_sysctls(ns, link.name, cfg, has_v6)
    for ip in plan.ips:
        # IPAM guarantees uniqueness, so DAD only delays the container (USERS.md item 11).
        addresses.ensure_address(cont, link.index, ip.address, nodad=not cfg.enable_dad)
    links.set_link_up(cont, link.index)
    if has_v6 and cfg.enable_dad:
        addresses.wait_addresses_settled(cont, link.index)
    first_gw: dict[int, IPAddress] = {}
    for ip in plan.ips:
        if ip.gateway is not None:
            first_gw.setdefault(ip.address.version, ip.gateway)
    for r in plan.routes:
        spec = RouteSpec(
            dst=r.dst, gateway=r.gw or first_gw.get(r.dst.version), index=link.index,
            priority=r.priority, table=r.table, scope=r.scope, mtu=r.mtu, advmss=r.advmss,
        )
        routes.add_route(cont, spec, append=True)


def _conflicts(wanted: IPInterface, existing: list[AddressInfo]) -> list[AddressInfo]:
    """IPv4: any other address conflicts; IPv6: only another address in an overlapping subnet."""
    out = []
    for a in existing:
        if a.interface == wanted or a.interface.version != wanted.version:
            continue
        if wanted.version == 4 or a.interface.network.overlaps(wanted.network):
            if wanted.version == 6 and a.interface.is_link_local:
                continue
            out.append(a)
    return out


def ensure_gateway_addresses(
    host: Netlink, br: LinkInfo, cfg: BridgeConfig, plan: L3Plan
) -> LinkInfo:
    """Put the gateways on the bridge (on `<bridge>.<vlan>` with a VLAN); returns that link."""
    gw_link = ensure_vlan_gateway(host, cfg, br) if cfg.vlan else br
    existing = addresses.list_addresses(host, gw_link.index)
    for wanted in plan.bridge_addresses:
        stale = _conflicts(wanted, existing)
        if stale and not cfg.force_address:
            have = ", ".join(str(a.interface) for a in stale)
            raise ConfigError(
                f'"{gw_link.name}" already has address {have}, expected {wanted}',
                f'set "forceAddress": true to replace it, or remove it: '
                f"ip addr del {stale[0].interface} dev {gw_link.name}",
            )
        addresses.ensure_address_replacing(host, gw_link.index, wanted, stale, nodad=True)
    for family in plan.forwarding_families:
        ensure_sysctl(FORWARDING_SYSCTL[family], 1)
    return gw_link


def flush_stale_neighbours(host: Netlink, br: LinkInfo, plan: L3Plan) -> None:
    """A reused address may still map to the previous container's MAC on the host."""
    for ip in plan.ips:
        with contextlib.suppress(CniError):
            neighbours.remove_neighbour(host, br.index, ip.address.ip)
