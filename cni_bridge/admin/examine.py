"""What ``status``, ``gc`` (its dry run) and ``reconcile`` read and repair. A network's state is
put together from the conflist, the host-local store, the runtime's result cache (attachments
added by ``cni-bridge add``) and the plugins' records; only ``reconcile`` writes (idempotently).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni_bridge.admin.runtime import Runtime
from cni_bridge.deploy.confdir import NetworkConf
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import SubprocessRunner
from cni_bridge.firewall.detect import detect_backend, make_backend
from cni_bridge.firewall.recorded import (
    backend_of,
    masq_entries,
    missing_extras,
    port_entries,
    restore_extras,
)
from cni_bridge.node import records
from cni_bridge.portmap.config import MAPPING_KEYS, go_field_names


@dataclass
class AttachmentState:
    container_id: str
    ifname: str
    addresses: list[str] = field(default_factory=list)  # reserved in the host-local store
    netns: str = ""
    host_veth: str = ""
    ports: list[str] = field(default_factory=list)
    rules: str = "no record"  # "present", "missing: ...", "no record", "none"
    sources: list[str] = field(default_factory=list)  # "store", "cache", "record"

    @property
    def key(self) -> tuple[str, str]:
        return self.container_id, self.ifname


def reservations(data_dir: str, network: str) -> dict[tuple[str, str], list[str]]:
    """(container ID, ifname) -> addresses, read straight from the store's files (no lock)."""
    from cni_bridge.ipam.host_local.store import decode_owner, reservation_ip

    directory = Path(data_dir) / network
    held: dict[tuple[str, str], list[str]] = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        ip = reservation_ip(path.name)
        if ip is None or path.is_symlink():
            continue
        try:
            owner = decode_owner(path.read_bytes())
        except OSError:
            continue
        held.setdefault((owner.container_id, owner.ifname or "?"), []).append(str(ip))
    return held


def grouped_records(recs: Iterable[records.Record]
                    ) -> dict[tuple[str, str], dict[str, records.Record]]:
    out: dict[tuple[str, str], dict[str, records.Record]] = {}
    for rec in recs:
        out.setdefault((rec.container_id, rec.ifname), {})[rec.plugin] = rec
    return out


def collect_attachments(conf: NetworkConf, runtime: Runtime, root: Path,
                        check_rules: bool = True,
                        recs: Sequence[records.Record] | None = None) -> list[AttachmentState]:
    """`recs`: the network's records when the caller has read them already."""
    name = conf.net.name
    found: dict[tuple[str, str], AttachmentState] = {}

    def state(key: tuple[str, str], source: str) -> AttachmentState:
        att = found.setdefault(key, AttachmentState(*key))
        if source not in att.sources:
            att.sources.append(source)
        return att

    if conf.data_dir is not None:
        for key, ips in reservations(conf.data_dir, name).items():
            state(key, "store").addresses = ips
    for cached in runtime.cached_attachments(name):
        att = state((cached.container_id, cached.ifname), "cache")
        att.netns = cached.netns
        att.host_veth = host_veth(runtime.cached_result(name, cached) or {}, conf.bridge)
        att.ports = [describe_mapping(m) for m in cached.capability_args.get("portMappings", [])
                     if isinstance(m, Mapping)]
    by_key = grouped_records(records.list_records(root, name) if recs is None else recs)
    for key, plugins in by_key.items():
        att = state(key, "record")
        if "portmap" in plugins:
            att.ports = [describe_mapping(m) for m in plugins["portmap"].data.get("mappings", [])]
        if check_rules:
            att.rules = rules_state(plugins.values())
    return sorted(found.values(), key=lambda a: a.key)


def host_veth(result: Mapping[str, Any], bridge: str | None) -> str:
    for iface in result.get("interfaces") or []:
        if not iface.get("sandbox") and iface.get("name") != bridge:
            return str(iface.get("name", ""))
    return ""


def describe_mapping(m: Mapping[str, Any]) -> str:
    m = go_field_names(m, MAPPING_KEYS)  # runtimes send other spellings (``HostPort``...)
    host_ip = m.get("hostIP") or ""
    where = f"[{host_ip}]:" if ":" in host_ip else (f"{host_ip}:" if host_ip else "")
    return f"{where}{m.get('hostPort')}->{m.get('containerPort')}/{m.get('protocol', 'tcp')}"


# --- firewall records --------------------------------------------------------------------------


def record_backend(rec: records.Record) -> Backend:
    return make_backend(backend_of(rec), SubprocessRunner())


def missing_rules(rec: records.Record) -> list[str]:
    """What of this record's rules is not in the firewall (empty: all present)."""
    backend = record_backend(rec)
    if rec.plugin == "bridge":
        return [*backend.check_masquerade(masq_entries(rec)),
                *missing_extras(SubprocessRunner(), rec)]
    if rec.plugin == "portmap":
        mappings, options = port_entries(rec)
        return list(backend.check_portmappings(mappings, options))
    return []


def restore_rules(rec: records.Record) -> None:
    backend = record_backend(rec)
    if rec.plugin == "bridge":
        backend.add_masquerade(masq_entries(rec))
        restore_extras(SubprocessRunner(), rec)
    elif rec.plugin == "portmap":
        mappings, options = port_entries(rec)
        backend.add_portmappings(mappings, options)


def rules_state(recs: Iterable[records.Record]) -> str:
    missing: list[str] = []
    try:
        for rec in recs:
            missing += missing_rules(rec)
    except Exception as exc:  # a damaged record or an unusable backend: say so, go on
        return f"unknown: {exc}"
    return "present" if not missing else "missing: " + "; ".join(missing)


@dataclass
class ReconcileItem:
    network: str
    container_id: str
    ifname: str
    plugin: str
    backend: str
    missing_before: list[str] = field(default_factory=list)
    error: str = ""


def reconcile(root: Path, network: str | None = None) -> list[ReconcileItem]:
    """Re-add the rules of every record (all networks unless `network`)."""
    items = []
    for rec in records.list_records(root, network):
        item = ReconcileItem(rec.network, rec.container_id, rec.ifname, rec.plugin,
                             backend_of(rec))
        try:
            item.missing_before = missing_rules(rec)
            if item.missing_before:
                restore_rules(rec)
        except Exception as exc:  # report per record; one bad record must not stop the rest
            item.error = str(exc)
        items.append(item)
    return items


@dataclass
class NetworkStatus:
    name: str
    path: str
    cni_version: str
    bridge: str
    bridge_state: str  # "up", "down", "absent", "unknown: ..."
    bridge_addresses: list[str]
    subnets: list[str]
    backend: str
    forwarding: dict[str, str]
    ready: str  # "yes" or "no: <why>"
    attachments: list[AttachmentState]


def bridge_state(name: str | None) -> tuple[str, list[str]]:
    if name is None:
        return "none (no bridge plugin)", []
    try:
        from cni_bridge.net.addresses import list_addresses
        from cni_bridge.net.links import find_link
        from cni_bridge.net.netlink import Netlink

        with Netlink.for_current() as nl:
            link = find_link(nl, name)
            if link is None:
                return "absent (created by the first ADD)", []
            addrs = [str(a.interface) for a in list_addresses(nl, link.index) if a.scope == 0]
            return ("up" if link.is_up else "down"), addrs
    except Exception as exc:
        return f"unknown: {exc}", []


def forwarding_state(bridge: str | None, subnets: Sequence[str]) -> dict[str, str]:
    from cni_bridge.net.sysctl import get_sysctl

    keys = ["net/ipv4/ip_forward"]
    if bridge:
        keys.append(f"net/ipv4/conf/{bridge}/forwarding")
    if any(":" in s for s in subnets):
        keys.append("net/ipv6/conf/all/forwarding")
    out = {}
    for key in keys:
        try:
            value = get_sysctl(key)
        except Exception:
            value = None
        out[key.replace("/", ".")] = {"1": "on", "0": "off"}.get(value or "", value or "absent")
    return out


def backend_state(conf: NetworkConf, recs: Iterable[records.Record]) -> str:
    used = sorted({str(r.data.get("backend")) for r in recs if r.data.get("backend")})
    if used:
        return ", ".join(used) + " (in use)"
    if conf.backend:
        return f"{conf.backend} (configured)"
    try:
        return f"{detect_backend(SubprocessRunner()).name} (detected)"
    except Exception as exc:
        return f"none usable: {exc}"


def network_status(conf: NetworkConf, runtime: Runtime, root: Path,
                   check_rules: bool = True) -> NetworkStatus:
    state, addrs = bridge_state(conf.bridge)
    recs = list(records.list_records(root, conf.net.name))  # read once for both below
    atts = collect_attachments(conf, runtime, root, check_rules, recs)
    try:
        runtime.status(conf.net)
        ready = "yes"
    except Exception as exc:
        ready = f"no: {exc}"
    return NetworkStatus(
        name=conf.net.name, path=str(conf.path or ""), cni_version=conf.net.cni_version,
        bridge=conf.bridge or "", bridge_state=state, bridge_addresses=addrs,
        subnets=list(conf.subnets), backend=backend_state(conf, recs),
        forwarding=forwarding_state(conf.bridge, conf.subnets), ready=ready, attachments=atts,
    )


def gc_candidates(conf: NetworkConf, runtime: Runtime, root: Path,
                  valid: Iterable[tuple[str, str]]) -> list[AttachmentState]:
    """The attachments a GC with this valid list would remove (nothing is changed)."""
    keep = set(valid)
    return [a for a in collect_attachments(conf, runtime, root, check_rules=False)
            if a.key not in keep and not (a.ifname == "?" and any(k[0] == a.container_id
                                                                  for k in keep))]
