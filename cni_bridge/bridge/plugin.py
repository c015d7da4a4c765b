"""The bridge plugin: ADD, DEL, CHECK, GC and STATUS orchestrated over the net, IPAM and
firewall layers. Every ADD step that changes something registers its undo, so a failure
leaves no veth, reservation or rule behind."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from cni_bridge.bridge import masq
from cni_bridge.bridge.addressing import (
    configure_container,
    ensure_gateway_addresses,
    flush_stale_neighbours,
)
from cni_bridge.bridge.check import check_attachment
from cni_bridge.bridge.config import BRIDGE_ARGS, BridgeConfig, parse_bridge_config
from cni_bridge.bridge.plan import plan_l3
from cni_bridge.bridge.undo import Undo
from cni_bridge.bridge.wiring import ensure_bridge, ensure_veth
from cni_bridge.ipam.facade import Ipam, ipam_for
from cni_bridge.net import links
from cni_bridge.net.errors import NetnsNotFound
from cni_bridge.net.model import LinkInfo
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import NetnsHandle, is_current_netns, open_netns
from cni_bridge.spec.errors import INVALID_NETNS, CniError
from cni_bridge.spec.request import Request
from cni_bridge.spec.result import DNS, Interface, IPInterface, Result

log = logging.getLogger("cni_bridge")

PORT_UP_TIMEOUT = 3.0


def container_netns(req: Request) -> NetnsHandle:
    """Open CNI_NETNS; configuring the plugin's own namespace as a container is refused."""
    if is_current_netns(req.env.netns):
        raise CniError(
            "refusing to configure the plugin's own network namespace as a container",
            f"CNI_NETNS={req.env.netns}", code=INVALID_NETNS,
        )
    return open_netns(req.env.netns)


@contextmanager
def sockets(ns: NetnsHandle) -> Iterator[tuple[Netlink, Netlink]]:
    with ExitStack() as stack:
        host = stack.enter_context(Netlink.for_current())
        cont = stack.enter_context(Netlink.for_netns(ns))
        yield host, cont


class BridgePlugin:
    def _ipam(self, req: Request) -> Ipam:
        return ipam_for(req, extra_arg_keys=BRIDGE_ARGS)

    # ------------------------------------------------------------------ ADD
    def add(self, req: Request) -> Result:
        cfg = parse_bridge_config(req)
        undo = Undo()
        with container_netns(req) as ns, sockets(ns) as (host, cont):
            try:
                result = self._add(req, cfg, ns, host, cont, undo)
            except BaseException:
                undo.run()
                raise
        return result

    def _add(
        self, req: Request, cfg: BridgeConfig, ns: NetnsHandle, host: Netlink, cont: Netlink,
        undo: Undo,
    ) -> Result:
        with req.timer.phase("links"):
            br = ensure_bridge(host, cfg)
            pair = ensure_veth(host, cont, cfg, br, req.env.ifname, undo)
        if cfg.macspoofchk:
            with req.timer.phase("spoofcheck"):
                masq.add_spoofcheck(req, pair.host.name, pair.container.mac or "")
                undo.push("remove spoof check", lambda: masq.remove_spoofcheck(req))
        ips: tuple = ()
        routes: tuple = ()
        dns = DNS()
        if cfg.l3:
            ipam = self._ipam(req)
            with req.timer.phase("ipam"):
                ipam_result = ipam.add(req)
            undo.push("release IPAM addresses", lambda: ipam.delete(req))
            plan = plan_l3(cfg, ipam_result)
            ips, routes, dns = plan.ips, plan.routes, ipam_result.dns
            with req.timer.phase("addresses"):
                configure_container(cont, ns, pair.container, cfg, plan)
                if cfg.is_gateway:
                    ensure_gateway_addresses(host, br, cfg, plan)
                flush_stale_neighbours(host, br, plan)
            if cfg.ip_masq:
                with req.timer.phase("firewall"):
                    masq.add_masquerade(req, cfg, plan.ips)
                undo.push("remove masquerade", lambda: masq.remove_masquerade(req, cfg, ()))
        elif not cfg.disable_container_interface:
            links.set_link_up(cont, pair.container.index)
        host_veth = pair.host
        if not cfg.disable_container_interface:
            with req.timer.phase("port-up"):
                host_veth = links.wait_link_oper_up(host, pair.host.index, PORT_UP_TIMEOUT)
        # The bridge MAC can change when its first port joins: read both back.
        br = links.get_link(host, br.index)
        return Result(
            interfaces=(
                Interface(name=br.name, mac=br.mac or ""),
                Interface(name=host_veth.name, mac=host_veth.mac or ""),
                Interface(name=req.env.ifname, mac=pair.container.mac or "", sandbox=req.env.netns),
            ),
            ips=ips,
            routes=routes,
            dns=dns if cfg.dns.is_empty() else cfg.dns,
        )

    # ------------------------------------------------------------------ DEL
    def delete(self, req: Request) -> None:
        """Never leaks: driven by prevResult and the IPAM store, not by the container's state."""
        cfg = parse_bridge_config(req)
        addresses = self._recorded_addresses(req, cfg)
        with req.timer.phase("links"):
            addresses += self._remove_container_link(req)
        if cfg.l3:
            with req.timer.phase("ipam"):
                self._ipam(req).delete(req)
        with req.timer.phase("firewall"):
            # Always, whatever ipMasq says now: the config may have changed since ADD.
            masq.remove_masquerade(req, cfg, tuple(dict.fromkeys(addresses)))
            if cfg.macspoofchk:
                masq.remove_spoofcheck(req)

    def _recorded_addresses(self, req: Request, cfg: BridgeConfig) -> list[IPInterface]:
        found: list[IPInterface] = []
        if req.prev_result is not None:
            found += [ip.address for ip in req.prev_result.ips]
        if cfg.l3:
            try:
                found += self._ipam(req).addresses_held(req)
            except CniError as exc:
                log.warning("cannot read IPAM records: %s", exc)
        return found

    def _remove_container_link(self, req: Request) -> list[IPInterface]:
        """Delete the container interface (its host veth goes with it); tolerate a gone netns."""
        if not req.env.netns:
            return []
        try:
            ns = open_netns(req.env.netns)
        except NetnsNotFound:
            return []
        except CniError as exc:
            log.warning("DEL: %s; skipping the container side", exc)
            return []
        with ns, Netlink.for_netns(ns) as cont:
            link: LinkInfo | None = links.find_link(cont, req.env.ifname)
            if link is None:
                return []
            from cni_bridge.net.addresses import list_addresses

            held = [a.interface for a in list_addresses(cont, link.index) if a.scope == 0]
            links.remove_link(cont, link.index)
            return held

    # ------------------------------------------------------------------ CHECK
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

    # ------------------------------------------------------------------ GC / STATUS
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
        from cni_bridge.bridge.check import check_bridge_name_free

        check_bridge_name_free(cfg)
