"""DEL: never leaks (USERS.md item 6).

Driven by the plugin's own records (prevResult, the IPAM store, the link if it still exists),
not by the container's state. Every step runs even when an earlier one failed; the failures
are reported together, so the runtime retries the DEL with everything else already cleaned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from cni_bridge.bridge import filtering, masq
from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPInterface
from cni_bridge.diag import logger
from cni_bridge.ipam.facade import Ipam
from cni_bridge.net import links
from cni_bridge.net.addresses import list_addresses
from cni_bridge.net.errors import NetnsNotFound
from cni_bridge.net.model import RT_SCOPE_UNIVERSE
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import open_netns, refuse_host_netns

log = logger(__name__)
T = TypeVar("T")


def delete_attachment(req: Request, cfg: BridgeConfig, ipam: Callable[[], Ipam]) -> None:
    refuse_host_netns_if_present(req)  # before anything: a refused DEL changes nothing
    errors: list[tuple[str, CniError]] = []
    addresses = recorded_addresses(req, cfg, ipam)
    with req.timer.phase("links"):
        held = _step(errors, "container interface", lambda: remove_container_link(req))
        if held is None:
            _step(errors, "host veth", lambda: remove_recorded_host_veth(req, cfg))
        addresses += held or []
    if cfg.l3:
        with req.timer.phase("ipam"):
            _step(errors, "IPAM", lambda: ipam().delete(req))
    with req.timer.phase("firewall"):
        # Always, whatever ipMasq says now: the config may have changed since ADD.
        unique = tuple(dict.fromkeys(addresses))
        _step(errors, "masquerade", lambda: masq.remove_masquerade(req, cfg, unique))
        if cfg.macspoofchk:
            _step(errors, "MAC spoof check", lambda: filtering.remove_spoofcheck(req))
    if errors:
        # The first failure's code (e.g. IPAM's "try again later") tells the runtime what to do.
        raise CniError(f"DEL of container {req.env.container_id} was incomplete",
                       "; ".join(f"{what}: {exc}" for what, exc in errors),
                       code=errors[0][1].code)


def _step(errors: list[tuple[str, CniError]], what: str, step: Callable[[], T]) -> T | None:
    try:
        return step()
    except CniError as exc:
        log.warning("DEL: %s: %s", what, exc)
        errors.append((what, exc))
        return None


def refuse_host_netns_if_present(req: Request) -> None:
    """The host's namespace as CNI_NETNS would make DEL remove the host interface named
    CNI_IFNAME: refused with code 8. A namespace that is gone is no reason to refuse."""
    if req.env.netns:
        with contextlib.suppress(NetnsNotFound):
            refuse_host_netns(req.env.netns)


def recorded_addresses(req: Request, cfg: BridgeConfig,
                       ipam: Callable[[], Ipam]) -> list[IPInterface]:
    found: list[IPInterface] = []
    if req.prev_result is not None:
        found += [ip.address for ip in req.prev_result.ips]
    if cfg.l3:
        try:
            found += ipam().addresses_held(req)
        except CniError as exc:
            log.warning("cannot read IPAM records: %s", exc)
    return found


def remove_container_link(req: Request) -> list[IPInterface] | None:
    """Delete the container interface (its host veth goes with it) and return the global
    addresses it held; None when the container namespace cannot be reached."""
    if not req.env.netns:
        return None
    try:
        ns = open_netns(req.env.netns)
    except NetnsNotFound:
        return None
    except CniError as exc:
        log.warning("DEL: %s; skipping the container side", exc)
        return None
    with ns, Netlink.for_netns(ns) as cont:
        link = links.find_link(cont, req.env.ifname)
        if link is None:
            return []
        held = [a.interface for a in list_addresses(cont, link.index)
                if a.scope == RT_SCOPE_UNIVERSE]
        links.remove_link(cont, link.index)
        return held


def remove_recorded_host_veth(req: Request, cfg: BridgeConfig) -> None:
    """The container side is out of reach, but its namespace may still hold the pair: remove
    the host veth prevResult names, if it is still a veth on our bridge."""
    if req.prev_result is None:
        return
    names = [i.name for i in req.prev_result.interfaces if not i.sandbox and i.name != cfg.bridge]
    with Netlink.for_current() as host:
        br = links.find_link(host, cfg.bridge)
        for name in names:
            link = links.find_link(host, name)
            if br is not None and link is not None and link.kind == "veth" \
                    and link.master_index == br.index:
                links.remove_link(host, link.index)
