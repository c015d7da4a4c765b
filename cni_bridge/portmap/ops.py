"""The portmap verbs' firewall work; loaded only by calls that have port mappings (or GC/STATUS).

- ADD: validate every entry, install them in one transaction of the chosen backend (a host port
  another attachment publishes fails the ADD, naming it), set ``route_localnet`` when 127.0.0.1
  is published, flush stale UDP conntrack. A failure after the rules went in removes them.
- DEL: remove this attachment's entries with the configured backend (or, when it is not usable,
  whichever is); each backend's removal also cleans the other backend's layout and the reference
  plugins' nftables tables. Without prevResult (or mappings) the entries come from our
  record of the ADD, else they are found by their owner tag.
  Conntrack is left alone: the next ADD publishing the port flushes it, as the reference's does.
- CHECK: the backend's precise list of what is missing, plus ``route_localnet``.
- GC: remove the entries of the network whose attachment is not valid, in every usable backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.cni.errors import PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import Result
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import CommandRunner, SubprocessRunner
from cni_bridge.firewall.conntrack import flush_udp_conntrack
from cni_bridge.firewall.detect import (
    detect_backend,
    is_usable,
    make_backend,
    recorded_backend,
)
from cni_bridge.firewall.model import (
    Owner,
    PortmapOptions,
    PortMapping,
    publishes_localhost,
    validate_mappings,
)
from cni_bridge.firewall.recorded import port_entries
from cni_bridge.node import records
from cni_bridge.portmap.config import BACKENDS, PortmapConfig, container_ips
from cni_bridge.portmap.localnet import (
    ensure_route_localnet,
    read_route_localnet,
    route_interface,
    sysctl_key,
)
from cni_bridge.portmap.plan import plan_entries, to_options

log = logger(__name__)


RECORD_PLUGIN = "portmap"


def owner_of(req: Request) -> Owner:
    return Owner(req.network_name, req.env.container_id, req.env.ifname)


def save_record(req: Request, entries: Sequence[PortMapping], options: PortmapOptions,
                backend: str) -> None:
    """What this ADD installed, for reconcile/status and for a DEL that gets no mappings."""
    mappings = [{"protocol": e.protocol, "hostPort": e.host_port,
                 "containerIP": str(e.container_ip), "containerPort": e.container_port,
                 "hostIP": str(e.host_ip) if e.host_ip else ""} for e in entries]
    opts = {"snat": options.snat, "masqAll": options.masq_all,
            "markMasqBit": options.mark_masq_bit,
            "externalSetMarkChain": options.external_set_mark_chain,
            "conditionsV4": list(options.conditions_v4),
            "conditionsV6": list(options.conditions_v6)}
    try:
        records.save_record(records.state_root(), records.Record(
            req.network_name, req.env.container_id, req.env.ifname, RECORD_PLUGIN,
            {"mappings": mappings, "options": opts, "backend": backend}))
    except OSError as exc:  # the rules are in; only reconcile/status lose sight of them
        log.warning("cannot write the portmap record of %s: %s", owner_of(req), exc)


class PortmapOps:
    def __init__(self, runner: CommandRunner | None = None) -> None:
        self._run: CommandRunner = runner or SubprocessRunner()

    # ------------------------------------------------------------------ ADD
    def add(self, req: Request, cfg: PortmapConfig, prev: Result) -> None:
        entries = self.entries(req, cfg, prev)
        if not entries:
            log.warning("portmap: prevResult has no address on %s for these mappings; "
                        "nothing published", req.env.ifname)
            return
        validate_mappings(entries)
        options = to_options(cfg.options)
        with req.timer.phase("firewall"):
            backend = self.backend(cfg)
            try:
                backend.add_portmappings(entries, options)
            except BaseException:
                self._rollback(backend, entries)
                raise
        try:
            with req.timer.phase("route_localnet"):
                for name in self._localnet_interfaces(entries, options):
                    ensure_route_localnet(name)
        except BaseException:
            self._rollback(backend, entries)
            raise
        with req.timer.phase("conntrack"):
            flush_udp_conntrack(entries)  # stale UDP flows (USERS.md item 9); best effort
        save_record(req, entries, options, backend.name)

    def entries(self, req: Request, cfg: PortmapConfig, prev: Result) -> list[PortMapping]:
        return plan_entries(owner_of(req), cfg.mappings, container_ips(prev, req.env.ifname))

    def _rollback(self, backend: Backend, entries: Sequence[PortMapping]) -> None:
        try:
            backend.remove_portmappings(entries[0].owner, entries)
        except CniError as exc:
            log.error("ADD failed and its port mappings could not be removed: %s", exc)

    def _localnet_interfaces(self, entries: Sequence[PortMapping],
                             options: PortmapOptions) -> list[str]:
        """Host interfaces routing to containers whose mappings answer on 127.0.0.1."""
        addresses = sorted({e.container_ip.ip for e in entries if publishes_localhost(e, options)},
                           key=str)
        names: set[str] = set()
        for address in addresses:
            name = route_interface(address)
            if not name:
                log.warning("no route to %s: its localhost mappings cannot work", address)
            elif name != "lo":
                names.add(name)
        return sorted(names)

    # ------------------------------------------------------------------ DEL
    def delete(self, req: Request, cfg: PortmapConfig, recorded: records.Record | None) -> None:
        """Remove with the backend our ADD `recorded` (its own layout only), else clean every
        usable backend."""
        owner = owner_of(req)
        entries: list[PortMapping] | None = None
        if req.prev_result is not None:
            entries = self.entries(req, cfg, req.prev_result) or None
        if entries is None and recorded is not None:
            entries = port_entries(recorded)[0] or None  # by key, not by reading every entry
        with req.timer.phase("firewall"):
            backend = (recorded_backend(recorded.data.get("backend"), self._run)
                       if recorded is not None else None) or self._cleanup_backend(cfg)
            if backend is None:
                log.warning("no usable firewall backend: no port mappings of %s to remove", owner)
                return
            # The conditions are part of the rules' text: iptables' exact removal needs them.
            backend.remove_portmappings(owner, entries, to_options(cfg.options))
        records.remove_record(records.state_root(), owner.network, owner.container_id,
                              owner.ifname, RECORD_PLUGIN)

    # ------------------------------------------------------------------ CHECK
    def check(self, req: Request, cfg: PortmapConfig, prev: Result) -> None:
        entries = self.entries(req, cfg, prev)
        if not entries:
            return
        options = to_options(cfg.options)
        missing = self.backend(cfg).check_portmappings(entries, options)
        for name in self._localnet_interfaces(entries, options):
            value = read_route_localnet(name)
            if value != "1":
                missing.append(f"sysctl {sysctl_key(name)} is {value}, expected 1")
        if missing:
            raise CniError(f"port mappings of {owner_of(req)} are not in place",
                           "; ".join(missing))

    # ------------------------------------------------------------------ GC / STATUS
    def gc(self, req: Request, cfg: PortmapConfig) -> None:
        valid = [Owner(req.network_name, cid, ifname) for cid, ifname in req.valid_attachments()]
        errors: list[str] = []
        for backend in self._usable_backends(cfg):
            try:
                for removed in backend.gc_portmappings(req.network_name, valid):
                    log.info("GC %s: removed %s", backend.name, removed)
            except CniError as exc:
                errors.append(f"{backend.name}: {exc}")
        keep = set(req.valid_attachments())
        root = records.state_root()
        for rec in records.list_records(root, req.network_name):
            if rec.plugin == RECORD_PLUGIN and (rec.container_id, rec.ifname) not in keep:
                records.remove_record(root, rec.network, rec.container_id, rec.ifname, rec.plugin)
        if errors:
            raise CniError(f"GC of the port mappings of network {req.network_name} failed",
                           "; ".join(errors))

    def status(self, cfg: PortmapConfig) -> None:
        try:
            self.backend(cfg)
        except CniError as exc:
            raise CniError(f"portmap cannot publish ports: {exc.msg}", exc.details,
                           code=PLUGIN_NOT_AVAILABLE) from None

    # ------------------------------------------------------------------ backends
    def backend(self, cfg: PortmapConfig) -> Backend:
        """The configured (or implied) backend, which must be usable; else the detected one."""
        return detect_backend(self._run, cfg.wanted_backend)

    def _cleanup_backend(self, cfg: PortmapConfig) -> Backend | None:
        """The backend to remove with: the configured one if usable, else any usable one.

        Either backend's removal also removes the owner's state left in the other backend's
        layout and in the reference plugins' nftables tables (a node may have switched).
        """
        for requested in dict.fromkeys([cfg.wanted_backend, None]):
            try:
                return detect_backend(self._run, requested)
            except CniError as exc:
                log.info("%s", exc)
        return None

    def _usable_backends(self, cfg: PortmapConfig) -> list[Backend]:
        """Every usable backend, the configured one first (GC: each knows only its own layout)."""
        first = cfg.wanted_backend or "nftables"
        order = [first, *(b for b in BACKENDS if b != first)]
        backends = [make_backend(name, self._run) for name in order]
        return [b for b in backends if is_usable(b)]
