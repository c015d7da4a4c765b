"""The bridge's view of the firewall layer: masquerade, spoof check and network isolation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cni_bridge.bridge.config import BridgeConfig
from cni_bridge.cni.errors import PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPConfig, IPInterface
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import SubprocessRunner
from cni_bridge.firewall.detect import (
    detect_backend,
    is_usable,
    make_backend,
    recorded_backend,
)
from cni_bridge.firewall.model import MasqEntry, Owner
from cni_bridge.firewall.nft import isolation, spoofcheck
from cni_bridge.firewall.recorded import masq_entries
from cni_bridge.node import records

log = logger(__name__)

ALL_BACKENDS = ("nftables", "iptables")


def _owner(req: Request) -> Owner:
    return Owner(req.network_name, req.env.container_id, req.env.ifname)


def _runner() -> SubprocessRunner:
    return SubprocessRunner()


def _backend(cfg: BridgeConfig) -> Backend:
    return detect_backend(_runner(), cfg.ip_masq_backend)


def _entries(req: Request, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> list[MasqEntry]:
    owner = _owner(req)
    return [MasqEntry.of(owner, ip.address, cfg.non_masquerade_cidrs) for ip in ips]


RECORD_PLUGIN = "bridge"


def masq_record_data(entry: MasqEntry) -> dict[str, Any]:
    """One masquerade entry as recorded (read back by ``firewall.recorded.masq_entries``)."""
    data: dict[str, Any] = {"address": str(entry.address), "subnet": str(entry.subnet)}
    if entry.non_masquerade:
        data["nonMasquerade"] = [str(n) for n in entry.non_masquerade]
    return data


def add_masquerade(req: Request, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> None:
    backend = _backend(cfg)
    entries = _entries(req, cfg, ips)
    backend.add_masquerade(entries)
    data = {"masq": [masq_record_data(e) for e in entries], "backend": backend.name}
    try:
        records.save_record(records.state_root(), records.Record(
            req.network_name, req.env.container_id, req.env.ifname, RECORD_PLUGIN, data))
    except OSError as exc:  # the rules are in; only reconcile/status lose sight of them
        log.warning("cannot write the masquerade record of %s: %s", _owner(req), exc)


def record_extras(req: Request, extras: dict[str, Any]) -> None:
    """Add the spoof check and isolation an ADD installed (``firewall.recorded``) to this
    attachment's record, once the ADD is done (an ADD that fails records nothing of them)."""
    old = _record(req)
    data = {**(old.data if old is not None else {}), **extras}
    try:
        records.save_record(records.state_root(), records.Record(
            req.network_name, req.env.container_id, req.env.ifname, RECORD_PLUGIN, data))
    except OSError as exc:  # the rules are in; only reconcile/status lose sight of them
        log.warning("cannot write the spoof check and isolation record of %s: %s",
                    _owner(req), exc)


def _record(req: Request) -> records.Record | None:
    return records.find_record(records.state_root(), req.network_name, req.env.container_id,
                               req.env.ifname, RECORD_PLUGIN)


def _usable_backends() -> list[Backend]:
    runner = _runner()
    return [b for b in (make_backend(n, runner) for n in ALL_BACKENDS) if is_usable(b)]


def remove_masquerade(req: Request, cfg: BridgeConfig, addresses: Sequence[IPInterface]) -> None:
    """Remove with the backend our ADD recorded; without a record (an ADD by the reference, or
    a lost record) clean every usable backend and the reference layouts, whatever the config
    says now."""
    owner = _owner(req)
    errors: list[str] = []
    rec = _record(req)
    # The backend our ADD used (if that backend is still usable), and its addresses when DEL
    # found none: removal by key rather than by reading every entry.
    recorded = recorded_backend(rec.data.get("backend"), _runner()) if rec is not None else None
    if not addresses and rec is not None:
        addresses = [e.address for e in masq_entries(rec)]
    for backend in [recorded] if recorded is not None else _usable_backends():
        try:
            backend.remove_masquerade(owner, list(addresses) or None)
        except CniError as exc:
            errors.append(f"{backend.name}: {exc}")
    if errors:
        raise CniError(f"cannot remove masquerade rules of {owner}", "; ".join(errors))
    records.remove_record(records.state_root(), owner.network, owner.container_id,
                          owner.ifname, RECORD_PLUGIN)


def check_masquerade(req: Request, cfg: BridgeConfig, ips: Sequence[IPConfig]) -> None:
    missing = _backend(cfg).check_masquerade(_entries(req, cfg, ips))
    if missing:
        raise CniError(f"masquerade rules of container {req.env.container_id} are missing",
                       "; ".join(missing))


def gc_masquerade(req: Request, cfg: BridgeConfig) -> None:
    valid = [Owner(req.network_name, cid, ifname) for cid, ifname in req.valid_attachments()]
    for backend in _usable_backends():
        for removed in backend.gc_masquerade(req.network_name, valid):
            log.info("GC %s: removed %s", backend.name, removed)
    keep = req.valid_attachments()
    root = records.state_root()
    for rec in records.list_records(root, req.network_name):
        if rec.plugin == RECORD_PLUGIN and (rec.container_id, rec.ifname) not in keep:
            records.remove_record(root, rec.network, rec.container_id, rec.ifname, rec.plugin)


def status(req: Request, cfg: BridgeConfig) -> None:
    if not cfg.ip_masq:
        return
    try:
        _backend(cfg)
    except CniError as exc:
        raise CniError(f"masquerading is configured but {exc.msg}", exc.details,
                       code=PLUGIN_NOT_AVAILABLE) from None


def add_spoofcheck(req: Request, host_veth: str, mac: str,
                   pin: spoofcheck.Pin | None = None) -> None:
    spoofcheck.add_spoofcheck(_runner(), req.env.container_id, req.env.ifname, host_veth, mac,
                              pin)


def remove_spoofcheck(req: Request) -> None:
    spoofcheck.remove_spoofcheck(_runner(), req.env.container_id, req.env.ifname)


def check_spoofcheck(req: Request, cfg: BridgeConfig) -> None:
    missing = spoofcheck.check_spoofcheck(_runner(), req.env.container_id, req.env.ifname,
                                          cfg.ipspoofchk)
    if missing:
        raise CniError(f"spoof check rules of container {req.env.container_id} are missing",
                       "; ".join(missing))


def isolate_network(interfaces: Sequence[str]) -> None:
    isolation.ensure_isolated(_runner(), interfaces)


def check_isolation(interfaces: Sequence[str]) -> None:
    problems = isolation.check_isolated(_runner(), interfaces)
    if problems:
        raise CniError(f"network isolation of {', '.join(interfaces)} is incomplete",
                       "; ".join(problems))
