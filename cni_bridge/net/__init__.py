"""The netlink layer: namespaces, links, bridges, veths, addresses, routes, neighbours, sysctls.

The only package that uses pyroute2, and only its message classes, imported on the first netlink
call (importing ``cni_bridge.net`` itself loads none of it). It is a thin executor with no CNI
policy: the bridge plugin decides what to do, this package does it and reports what it found.

Usage::

    with open_netns(cni_netns) as cns, Netlink.for_current() as host, Netlink.for_netns(cns) as ct:
        br = ensure_bridge(host, BridgeSpec("cni0", mtu=1500))
        pair = create_veth_pair(host, ct, VethSpec("eth0", mtu=1500))
        set_master(host, pair.host, br)
        set_link_up(host, pair.host)

Errors are CniError subclasses (see ``errors``); nothing from pyroute2 escapes this package.
"""

from typing import TYPE_CHECKING, Any

# The names below are imported on first use (__getattr__): a plugin that needs one module of
# the package (loopback: netns, errors) does not load the others (~27 modules, ~5 ms per call).
if TYPE_CHECKING:
    from cni_bridge.net.addresses import (
        ensure_address,
        ensure_address_replacing,
        list_addresses,
        remove_address,
        wait_addresses_settled,
    )
    from cni_bridge.net.bridge import (
        add_bridge_vlans,
        ensure_bridge,
        get_bridge_vlans,
        remove_bridge_vlans,
        set_bridge_port_flags,
    )
    from cni_bridge.net.errors import (
        LinkNotFound,
        NetlinkOpError,
        NetnsNotFound,
        SysctlError,
        WaitTimeout,
    )
    from cni_bridge.net.links import (
        LinkRef,
        find_link,
        get_link,
        list_links,
        remove_link,
        set_link_down,
        set_link_up,
        set_mac,
        set_master,
        set_mtu,
        set_promisc,
        wait_link_oper_up,
    )
    from cni_bridge.net.model import (
        AddressInfo,
        BridgePortFlags,
        BridgePortInfo,
        BridgeSpec,
        BridgeVlan,
        LinkInfo,
        NextHop,
        OperState,
        RouteInfo,
        RouteSpec,
        VethPair,
        VethSpec,
    )
    from cni_bridge.net.neighbours import remove_neighbour
    from cni_bridge.net.netlink import Netlink
    from cni_bridge.net.netns import NetnsHandle, enter_netns, is_current_netns, open_netns
    from cni_bridge.net.routes import (
        add_route,
        ensure_route,
        get_route_to,
        list_default_routes,
        list_routes,
        remove_route,
    )
    from cni_bridge.net.sysctl import SysctlOutcome, ensure_sysctl, get_sysctl, ipv6_available
    from cni_bridge.net.veth import create_veth_pair, random_veth_name

__all__ = [
    "AddressInfo",
    "BridgePortFlags",
    "BridgePortInfo",
    "BridgeSpec",
    "BridgeVlan",
    "LinkInfo",
    "LinkNotFound",
    "LinkRef",
    "NetlinkOpError",
    "Netlink",
    "NetnsHandle",
    "NetnsNotFound",
    "NextHop",
    "OperState",
    "RouteInfo",
    "RouteSpec",
    "SysctlError",
    "SysctlOutcome",
    "VethPair",
    "VethSpec",
    "WaitTimeout",
    "add_bridge_vlans",
    "add_route",
    "create_veth_pair",
    "ensure_address",
    "ensure_address_replacing",
    "ensure_bridge",
    "ensure_route",
    "ensure_sysctl",
    "enter_netns",
    "find_link",
    "get_bridge_vlans",
    "get_link",
    "get_route_to",
    "get_sysctl",
    "ipv6_available",
    "is_current_netns",
    "list_addresses",
    "list_default_routes",
    "list_links",
    "list_routes",
    "open_netns",
    "random_veth_name",
    "remove_address",
    "remove_bridge_vlans",
    "remove_link",
    "remove_neighbour",
    "remove_route",
    "set_bridge_port_flags",
    "set_link_down",
    "set_link_up",
    "set_mac",
    "set_master",
    "set_mtu",
    "set_promisc",
    "wait_addresses_settled",
    "wait_link_oper_up",
]

_MODULES = ("addresses", "bridge", "errors", "links", "model", "neighbours", "netlink", "netns",
            "routes", "sysctl", "veth")


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        for module in _MODULES:
            found = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if found is not None:
                return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
