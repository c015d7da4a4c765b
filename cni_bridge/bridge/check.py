"""CHECK against prevResult, saying exactly what differs. Later plugins' changes (extra
addresses, routes, MTU) are tolerated; anything this plugin created that is missing fails."""

from __future__ import annotations

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.cni.errors import PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import Result
from cni_bridge.net import addresses, links, routes
from cni_bridge.net.model import LinkInfo
from cni_bridge.net.netlink import Netlink


def _find_host_veth(host: Netlink, br: LinkInfo, container: LinkInfo) -> LinkInfo | None:
    """The container veth's peer, by the index the container side names (one request however
    many ports the bridge has); a VLAN gateway's peer is in the same namespace, so not it."""
    if container.peer_index is None:
        return None
    link = links.find_link(host, container.peer_index)
    if (link is not None and link.kind == "veth" and link.master_index == br.index
            and link.peer_index == container.index and link.link_netnsid is not None):
        return link
    return None


def _check_bridge(
    host: Netlink, cfg: BridgeConfig, prev: Result, problems: list[str]
) -> LinkInfo | None:
    br = links.find_link(host, cfg.bridge)
    if br is None:
        problems.append(f'bridge "{cfg.bridge}" does not exist')
        return None
    if br.kind != "bridge":
        problems.append(f'"{cfg.bridge}" is a {br.kind or "device"}, not a bridge')
        return None
    recorded = next((i for i in prev.interfaces if i.name == cfg.bridge and not i.sandbox), None)
    if recorded is not None and recorded.mac and br.mac and recorded.mac != br.mac:
        problems.append(f'bridge "{cfg.bridge}" MAC is {br.mac}, prevResult has {recorded.mac}')
    if br.promisc != cfg.promisc_mode:
        problems.append(f'bridge "{cfg.bridge}" promiscuous mode is {br.promisc}, '
                        f"config says {cfg.promisc_mode}")
    return br


def _check_container(
    cont: Netlink, req: Request, prev: Result, problems: list[str]
) -> LinkInfo | None:
    ifname = req.env.ifname
    recorded = next((i for i in prev.interfaces if i.name == ifname and i.sandbox), None)
    if recorded is not None and recorded.sandbox != req.env.netns:
        problems.append(f'prevResult puts "{ifname}" in {recorded.sandbox}, not {req.env.netns}')
    link = links.find_link(cont, ifname)
    if link is None:
        problems.append(f'container interface "{ifname}" does not exist in {req.env.netns}')
        return None
    if link.kind != "veth":
        problems.append(f'container interface "{ifname}" is a {link.kind}, not a veth')
    if recorded is not None and recorded.mac and link.mac != recorded.mac:
        problems.append(f'container interface "{ifname}" MAC is {link.mac}, '
                        f"prevResult has {recorded.mac}")
    return link


def _check_l3(cont: Netlink, link: LinkInfo, prev: Result, problems: list[str]) -> None:
    have = {a.interface for a in addresses.list_addresses(cont, link.index)}
    container_index = next(
        (n for n, i in enumerate(prev.interfaces) if i.name == link.name and i.sandbox), None
    )
    for ip in prev.ips:
        if ip.interface is not None and ip.interface != container_index:
            continue
        if ip.address not in have:
            problems.append(f'address {ip.address} is missing from "{link.name}"')
    table = routes.list_routes(cont, table=None)
    for r in prev.routes:
        ok = any(t.dst == r.dst and (r.gw is None or t.gateway == r.gw
                                     or any(h.gateway == r.gw for h in t.nexthops))
                 for t in table)
        if not ok:
            via = f" via {r.gw}" if r.gw else ""
            problems.append(f"route to {r.dst}{via} is missing in the container")


def check_attachment(
    req: Request, cfg: BridgeConfig, host: Netlink, cont: Netlink, prev: Result
) -> None:
    problems: list[str] = []
    br = _check_bridge(host, cfg, prev, problems)
    link = _check_container(cont, req, prev, problems)
    if br is not None and link is not None:
        veth = _find_host_veth(host, br, link)
        if veth is None:
            problems.append(f'no host veth attached to "{cfg.bridge}" is the peer of '
                            f'"{link.name}"')
    if link is not None:
        if not cfg.disable_container_interface and not link.is_up:
            problems.append(f'container interface "{link.name}" is down')
        _check_l3(cont, link, prev, problems)
    if problems:
        raise CniError(f"CHECK failed for container {req.env.container_id}", "; ".join(problems))


def check_bridge_name_free(cfg: BridgeConfig) -> None:
    """STATUS: a non-bridge link holding the bridge's name would make every ADD fail."""
    with Netlink.for_current() as host:
        link = links.find_link(host, cfg.bridge)
    if link is not None and link.kind != "bridge":
        raise CniError(
            f'"{cfg.bridge}" already exists but is not a bridge', f"kind {link.kind}",
            code=PLUGIN_NOT_AVAILABLE,
        )
