"""The bridge's nftables filter rules: the spoof check of each container's veth and the
isolation between bridges; recorded beside the masquerade for the healer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.bridge.masq import policy
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.firewall.commands import SubprocessRunner
from cni_bridge.firewall.nft import isolation, spoofcheck


def record_extras(req: Request, extras: dict[str, Any]) -> None:
    """Add the spoof check and isolation an ADD installed (``firewall.recorded``) to this
    attachment's record, once the ADD is done (an ADD that fails records nothing of them)."""
    p = policy(req)
    old = p.record()
    p.save_record({**(old.data if old is not None else {}), **extras})


def add_spoofcheck(req: Request, host_veth: str, mac: str,
                   pin: spoofcheck.Pin | None = None) -> None:
    spoofcheck.add_spoofcheck(SubprocessRunner(), req.env.container_id, req.env.ifname,
                              host_veth, mac, pin)


def remove_spoofcheck(req: Request) -> None:
    spoofcheck.remove_spoofcheck(SubprocessRunner(), req.env.container_id, req.env.ifname)


def check_spoofcheck(req: Request, cfg: BridgeConfig) -> None:
    missing = spoofcheck.check_spoofcheck(SubprocessRunner(), req.env.container_id,
                                          req.env.ifname, cfg.ipspoofchk)
    if missing:
        raise CniError(f"spoof check rules of container {req.env.container_id} are missing",
                       "; ".join(missing))


def isolate_network(interfaces: Sequence[str]) -> None:
    isolation.ensure_isolated(SubprocessRunner(), interfaces)


def check_isolation(interfaces: Sequence[str]) -> None:
    problems = isolation.check_isolated(SubprocessRunner(), interfaces)
    if problems:
        raise CniError(f"network isolation of {', '.join(interfaces)} is incomplete",
                       "; ".join(problems))
