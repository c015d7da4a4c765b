"""The bridge's masquerade (``ipMasq``), under the shared firewall policy (``firewall.policy``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPConfig, IPInterface
from cni_bridge.firewall.commands import SubprocessRunner
from cni_bridge.firewall.model import MasqEntry
from cni_bridge.firewall.policy import Policy
from cni_bridge.firewall.recorded import masq_entries

RECORD_PLUGIN = "bridge"


def policy(req: Request, cfg: BridgeConfig | None = None) -> Policy:
    return Policy(req, RECORD_PLUGIN, SubprocessRunner(),
                  cfg.ip_masq_backend if cfg is not None else None)


def _entries(policy: Policy, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> list[MasqEntry]:
    return [MasqEntry.of(policy.owner, ip.address, cfg.non_masquerade_cidrs) for ip in ips]


def masq_record_data(entry: MasqEntry) -> dict[str, Any]:
    """One masquerade entry as recorded (read back by ``firewall.recorded.masq_entries``)."""
    data: dict[str, Any] = {"address": str(entry.address), "subnet": str(entry.subnet)}
    if entry.non_masquerade:
        data["nonMasquerade"] = [str(n) for n in entry.non_masquerade]
    return data


def add_masquerade(req: Request, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> None:
    p = policy(req, cfg)
    backend, entries = p.backend(), _entries(p, cfg, ips)
    backend.add_masquerade(entries)
    p.save_record({"masq": [masq_record_data(e) for e in entries], "backend": backend.name})


def remove_masquerade(req: Request, cfg: BridgeConfig, addresses: Sequence[IPInterface]) -> None:
    """Whatever the config says now; without `addresses` those our ADD recorded (removal by
    key rather than by reading every entry)."""
    p = policy(req, cfg)
    rec = p.record()
    if not addresses and rec is not None:
        addresses = [e.address for e in masq_entries(rec)]
    p.remove(rec, lambda b: b.remove_masquerade(p.owner, list(addresses) or None),
             "masquerade rules")


def check_masquerade(req: Request, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> None:
    p = policy(req, cfg)
    missing = p.backend().check_masquerade(_entries(p, cfg, ips))
    if missing:
        raise CniError(f"masquerade rules of container {req.env.container_id} are missing",
                       "; ".join(missing))


def gc_masquerade(req: Request, cfg: BridgeConfig) -> None:
    policy(req, cfg).gc(lambda b, valid: b.gc_masquerade(req.network_name, valid),
                        "masquerade rules")


def status(req: Request, cfg: BridgeConfig) -> None:
    if cfg.ip_masq:
        policy(req, cfg).require_backend("masquerading is configured but ")
