"""The bridge's nftables filter rules: the spoof check of each container's veth and the
isolation between bridges; recorded beside the masquerade for the healer. Their modules are
imported only by the calls whose config asks for them."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.bridge.masq import policy
from cni_bridge.bridge.plan import L3Plan
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.firewall.commands import SubprocessRunner
from cni_bridge.net.addresses import list_addresses
from cni_bridge.net.model import LinkInfo
from cni_bridge.net.netlink import Netlink

if TYPE_CHECKING:
    from cni_bridge.firewall.nft.spoofcheck import Pin


def record_extras(req: Request, extras: dict[str, Any]) -> None:
    """Add the spoof check and isolation an ADD installed (``firewall.recorded``) to this
    attachment's record, once the ADD is done (an ADD that fails records nothing of them)."""
    p = policy(req)
    old = p.record()
    p.save_record({**(old.data if old is not None else {}), **extras})


def address_pin(cont: Netlink, container: LinkInfo, plan: L3Plan) -> Pin:
    """The container's MAC and addresses, with the IPv6 link-locals it holds now."""
    from cni_bridge.firewall.nft.spoofcheck import make_pin

    held = [a.address for a in list_addresses(cont, container.index, version=6)]
    return make_pin(container.mac or "", [ip.address.ip for ip in plan.ips],
                    [a for a in held if isinstance(a, IPv6Address) and a.is_link_local])


def add_spoofcheck(req: Request, host_veth: str, mac: str, pin: Pin | None) -> dict[str, Any]:
    """Install the spoof check; what its record holds."""
    from cni_bridge.firewall.nft import spoofcheck
    from cni_bridge.firewall.recorded import spoof_record_data

    spoofcheck.add_spoofcheck(SubprocessRunner(), req.env.container_id, req.env.ifname,
                              host_veth, mac, pin)
    return spoof_record_data(host_veth, mac, pin)


def remove_spoofcheck(req: Request) -> None:
    from cni_bridge.firewall.nft import spoofcheck

    spoofcheck.remove_spoofcheck(SubprocessRunner(), req.env.container_id, req.env.ifname)


def check_spoofcheck(req: Request, cfg: BridgeConfig) -> None:
    from cni_bridge.firewall.nft import spoofcheck

    missing = spoofcheck.check_spoofcheck(SubprocessRunner(), req.env.container_id,
                                          req.env.ifname, cfg.ipspoofchk)
    if missing:
        raise CniError(f"spoof check rules of container {req.env.container_id} are missing",
                       "; ".join(missing))


def isolate_network(interfaces: Sequence[str]) -> None:
    from cni_bridge.firewall.nft import isolation

    isolation.ensure_isolated(SubprocessRunner(), interfaces)


def check_isolation(interfaces: Sequence[str]) -> None:
    from cni_bridge.firewall.nft import isolation

    problems = isolation.check_isolated(SubprocessRunner(), interfaces)
    if problems:
        raise CniError(f"network isolation of {', '.join(interfaces)} is incomplete",
                       "; ".join(problems))
