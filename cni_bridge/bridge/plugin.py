"""The bridge plugin. Every ADD step that changes something registers its undo, so a failure
leaves no veth, reservation or rule behind (only the bridge, shared by the network, stays)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni_bridge.bridge import addressing, filtering, masq
from cni_bridge.bridge.check import check_attachment, check_bridge_name_free
from cni_bridge.bridge.config import BRIDGE_ARGS, BridgeConfig, parse_bridge_config
from cni_bridge.bridge.plan import L3Plan, plan_l3
from cni_bridge.bridge.teardown import delete_attachment
from cni_bridge.bridge.undo import Undo
from cni_bridge.bridge.wiring import ensure_bridge, ensure_veth
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import DNS, Interface, Result
from cni_bridge.ipam.facade import HOST_LOCAL, Ipam, ipam_for
from cni_bridge.net import links
from cni_bridge.net.model import LinkInfo, VethPair
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import NetnsHandle, open_netns, refuse_host_netns

if TYPE_CHECKING:
    from cni_bridge.firewall.nft.spoofcheck import Pin

PORT_UP_TIMEOUT = 3.0


def container_netns(req: Request) -> NetnsHandle:
    refuse_host_netns(req.env.netns)
    return open_netns(req.env.netns)


@contextmanager
def sockets(ns: NetnsHandle) -> Iterator[tuple[Netlink, Netlink]]:
    with ExitStack() as stack:
        host = stack.enter_context(Netlink.for_current())
        cont = stack.enter_context(Netlink.for_netns(ns))
        yield host, cont


@dataclass(frozen=True)
class Attach:
    """One ADD in progress: what every step needs."""

    req: Request
    cfg: BridgeConfig
    ns: NetnsHandle
    host: Netlink
    cont: Netlink
    undo: Undo


@dataclass(frozen=True)
class L3Done:
    plan: L3Plan
    dns: DNS
    vlan_gateway: LinkInfo | None  # `<bridge>.<vlan>` when it carries the gateway


class BridgePlugin:
    def _ipam(self, req: Request) -> Ipam:
        return ipam_for(req, extra_arg_keys=BRIDGE_ARGS)

    def add(self, req: Request) -> Result:
        cfg = parse_bridge_config(req)
        undo = Undo()
        with container_netns(req) as ns, sockets(ns) as (host, cont):
            try:
                result = self._add(Attach(req, cfg, ns, host, cont, undo))
            except BaseException:
                undo.run()
                raise
        return result

    def _add(self, at: Attach) -> Result:
        req, cfg, host = at.req, at.cfg, at.host
        allocated: Result | None = None
        if cfg.l3 and cfg.ipam_type == HOST_LOCAL:
            # First, so a bad IPAM config or a full range fails before anything exists on the
            # host; other IPAM plugins (dhcp) may need the interface: after the links.
            allocated = self._allocate(at)
        with req.timer.phase("links"):
            br = ensure_bridge(host, cfg)
            pair = ensure_veth(host, at.cont, cfg, br, req.env.ifname, at.undo)
        extras: dict[str, Any] = {}  # recorded once the ADD is done, for the healer
        if cfg.macspoofchk and not cfg.ipspoofchk:
            extras["spoofcheck"] = self._spoofcheck(at, pair, None)
        l3 = L3Done(L3Plan((), (), (), ()), DNS(), None)
        if cfg.l3:
            l3 = self._add_l3(at, br, pair.container, allocated or self._allocate(at))
        elif not cfg.disable_container_interface:
            links.set_link_up(at.cont, pair.container.index)
        if cfg.ipspoofchk:  # pins the addresses: after L3 (the config guarantees IPAM)
            pin = filtering.address_pin(at.cont, pair.container, l3.plan)
            extras["spoofcheck"] = self._spoofcheck(at, pair, pin)
        if cfg.isolate_networks:
            with req.timer.phase("isolation"):
                gateway = [l3.vlan_gateway.name] if l3.vlan_gateway is not None else []
                extras["isolate"] = [br.name, *gateway]
                filtering.isolate_network(extras["isolate"])
        host_veth = pair.host
        if not cfg.disable_container_interface:
            with req.timer.phase("port-up"):
                host_veth = links.wait_link_oper_up(host, pair.host.index, PORT_UP_TIMEOUT)
        if extras:
            filtering.record_extras(req, extras)
        br = links.get_link(host, br.index)  # report the MACs as they are now
        interfaces = [
            Interface(name=br.name, mac=br.mac or ""),
            Interface(name=host_veth.name, mac=host_veth.mac or ""),
            Interface(name=req.env.ifname, mac=pair.container.mac or "", sandbox=req.env.netns),
        ]
        if l3.vlan_gateway is not None:
            interfaces.append(Interface(name=l3.vlan_gateway.name, mac=l3.vlan_gateway.mac or ""))
        return Result(
            interfaces=tuple(interfaces),
            ips=l3.plan.ips,
            routes=l3.plan.routes,
            dns=l3.dns if cfg.dns.is_empty() else cfg.dns,
        )

    def _spoofcheck(self, at: Attach, pair: VethPair, pin: Pin | None) -> dict[str, Any]:
        with at.req.timer.phase("spoofcheck"):
            at.undo.push("remove spoof check", lambda: filtering.remove_spoofcheck(at.req))
            return filtering.add_spoofcheck(at.req, pair.host.name, pair.container.mac or "", pin)

    def _allocate(self, at: Attach) -> Result:
        ipam = self._ipam(at.req)
        with at.req.timer.phase("ipam"):
            result = ipam.add(at.req)
        at.undo.push("release IPAM addresses", lambda: ipam.delete(at.req))
        return result

    def _add_l3(
        self, at: Attach, br: LinkInfo, container: LinkInfo, ipam_result: Result
    ) -> L3Done:
        req, cfg = at.req, at.cfg
        plan = plan_l3(cfg, ipam_result)
        gw_link = br
        with req.timer.phase("addresses"):
            addressing.configure_container(at.cont, at.ns, container, cfg, plan)
            if cfg.is_gateway:
                gw_link = addressing.ensure_gateway_addresses(at.host, br, cfg, plan)
            addressing.flush_stale_neighbours(at.host, gw_link, plan)
        if cfg.ip_masq:
            # Undo first: a dual-stack iptables ADD is one transaction per family, and the
            # second may fail after the first went in. Removal tolerates what is absent, and
            # is by address: the iptables chain is shared with the container's other ifnames.
            mine = tuple(ip.address for ip in plan.ips)
            at.undo.push("remove masquerade", lambda: masq.remove_masquerade(req, cfg, mine))
            with req.timer.phase("firewall"):
                masq.add_masquerade(req, cfg, plan.ips)
        return L3Done(plan, ipam_result.dns, gw_link if gw_link.index != br.index else None)

    def delete(self, req: Request) -> None:
        delete_attachment(req, parse_bridge_config(req), lambda: self._ipam(req))

    def check(self, req: Request) -> None:
        cfg = parse_bridge_config(req)
        if req.prev_result is None:
            raise CniError("Required prevResult missing", "CHECK needs the result of ADD")
        if cfg.l3:
            self._ipam(req).check(req)
        with container_netns(req) as ns, sockets(ns) as (host, cont):
            check_attachment(req, cfg, host, cont, req.prev_result)
        if cfg.ip_masq and cfg.l3:
            masq.check_masquerade(req, cfg, req.prev_result.ips)
        if cfg.macspoofchk:
            filtering.check_spoofcheck(req, cfg)
        if cfg.isolate_networks:
            filtering.check_isolation([cfg.bridge])

    def gc(self, req: Request) -> None:
        cfg = parse_bridge_config(req)
        errors: list[str] = []
        if cfg.l3:
            try:
                self._ipam(req).gc(req)
            except CniError as exc:
                errors.append(f"IPAM: {exc}")
        try:
            masq.gc_masquerade(req, cfg)
        except CniError as exc:
            errors.append(f"firewall: {exc}")
        if errors:
            raise CniError("GC could not remove everything", "; ".join(errors))

    def status(self, req: Request) -> None:
        cfg = parse_bridge_config(req)
        if cfg.l3:
            self._ipam(req).status(req)
        masq.status(req, cfg)
        check_bridge_name_free(cfg)
