"""Pure L3 planning from the IPAM result and the config: the reference's calcGateways
(REFERENCE.md §2.2 step 6)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import ip_interface, ip_network

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import IPConfig, IPInterface, Result, Route

CONTAINER_IFACE_INDEX = 2  # result interfaces are [bridge, host veth, container veth]


@dataclass(frozen=True)
class L3Plan:
    ips: tuple[IPConfig, ...]                  # what the container gets, interface index set
    routes: tuple[Route, ...]                  # IPAM routes plus the default routes we add
    bridge_addresses: tuple[IPInterface, ...]  # gateway/container-prefix, one per gateway
    forwarding_families: tuple[int, ...]       # IP versions whose forwarding must be on


def _is_default(route: Route) -> bool:
    return route.dst.prefixlen == 0


def plan_l3(cfg: BridgeConfig, ipam: Result) -> L3Plan:
    if not ipam.ips:
        raise CniError("IPAM plugin returned missing IP config", f"ipam type {cfg.ipam_type!r}")
    ips: list[IPConfig] = []
    gateways: list[IPInterface] = []
    for ip in ipam.ips:
        gw = ip.gateway
        if gw is None and cfg.is_gateway:
            gw = ip.address.network.network_address + 1
        ips.append(replace(ip, gateway=gw, interface=CONTAINER_IFACE_INDEX))
        if gw is not None and cfg.is_gateway:
            gw_addr = ip_interface(f"{gw}/{ip.address.network.prefixlen}")
            if gw_addr not in gateways:
                gateways.append(gw_addr)
    routes = list(ipam.routes)
    if cfg.is_default_gateway:
        for gw_addr in gateways:
            family = gw_addr.version
            # Only a default route *with* a gateway counts (reference behaviour).
            if not any(_is_default(r) and r.gw is not None and r.dst.version == family
                       for r in routes):
                dst = ip_network("0.0.0.0/0" if family == 4 else "::/0")
                routes.append(Route(dst=dst, gw=gw_addr.ip))
    families = tuple(sorted({g.version for g in gateways}))
    return L3Plan(tuple(ips), tuple(routes), tuple(gateways), families)
