"""The portmap verbs' firewall work; loaded only by calls that have port mappings (or GC/STATUS).

ADD installs every entry in one transaction of the chosen backend and removes them if a later
step fails. DEL leaves conntrack alone: the next ADD publishing the port flushes it, as the
reference's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import Result
from cni_bridge.diag import logger
from cni_bridge.firewall import model
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import CommandRunner, SubprocessRunner
from cni_bridge.firewall.conntrack import flush_udp_conntrack
from cni_bridge.firewall.model import Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.policy import Policy, owner_of
from cni_bridge.node import records
from cni_bridge.portmap import config, localnet
from cni_bridge.portmap.config import ContainerIPs, MappingSpec, Options, PortmapConfig

log = logger(__name__)


def to_options(options: Options) -> PortmapOptions:
    return PortmapOptions(**vars(options))  # the same fields (a unit test checks)


def plan_entries(owner: Owner, mappings: Sequence[MappingSpec],
                 ips: ContainerIPs) -> list[PortMapping]:
    """One entry per (mapping, container family it applies to), in config order, IPv4 first:
    the iptables backend builds its multiport lists from this order, as the reference does."""
    entries: list[PortMapping] = []
    for m in mappings:
        for ip in ips:
            if m.matches_family(ip.version):
                entries.append(PortMapping(owner, m.protocol, m.host_port, ip,
                                           m.container_port, m.host_ip))
    return entries


def record_data(entries: Sequence[PortMapping], options: PortmapOptions,
                backend: str) -> dict[str, Any]:
    """What an ADD installed, for reconcile/status and for a DEL that gets no mappings."""
    mappings = [{"protocol": e.protocol, "hostPort": e.host_port,
                 "containerIP": str(e.container_ip), "containerPort": e.container_port,
                 "hostIP": str(e.host_ip) if e.host_ip else ""} for e in entries]
    opts = {"snat": options.snat, "masqAll": options.masq_all,
            "markMasqBit": options.mark_masq_bit,
            "externalSetMarkChain": options.external_set_mark_chain,
            "conditionsV4": list(options.conditions_v4),
            "conditionsV6": list(options.conditions_v6)}
    return {"mappings": mappings, "options": opts, "backend": backend}


class PortmapOps:
    def __init__(self, runner: CommandRunner | None = None) -> None:
        self._run: CommandRunner = runner or SubprocessRunner()

    def policy(self, req: Request, cfg: PortmapConfig) -> Policy:
        return Policy(req, config.RECORD_PLUGIN, self._run, cfg.wanted_backend)

    def add(self, req: Request, cfg: PortmapConfig, prev: Result) -> None:
        entries = self.entries(req, cfg, prev)
        if not entries:
            log.warning("portmap: prevResult has no address on %s for these mappings; "
                        "nothing published", req.env.ifname)
            return
        model.validate_mappings(entries)
        options = to_options(cfg.options)
        policy = self.policy(req, cfg)
        with req.timer.phase("firewall"):
            backend = policy.backend()
        try:
            with req.timer.phase("firewall"):
                backend.add_portmappings(entries, options)
            with req.timer.phase("route_localnet"):
                for name in self._localnet_interfaces(entries, options):
                    localnet.ensure_route_localnet(name)
        except BaseException:
            self._rollback(backend, entries)
            raise
        with req.timer.phase("conntrack"):
            flush_udp_conntrack(entries)  # stale UDP flows (USERS.md item 9); best effort
        policy.save_record(record_data(entries, options, backend.name))

    def entries(self, req: Request, cfg: PortmapConfig, prev: Result) -> list[PortMapping]:
        return plan_entries(owner_of(req), cfg.mappings, config.container_ips(prev, req.env.ifname))

    def _rollback(self, backend: Backend, entries: Sequence[PortMapping]) -> None:
        try:
            backend.remove_portmappings(entries[0].owner, entries)
        except CniError as exc:
            log.error("ADD failed and its port mappings could not be removed: %s", exc)

    def _localnet_interfaces(self, entries: Sequence[PortMapping],
                             options: PortmapOptions) -> list[str]:
        """Host interfaces routing to containers whose mappings answer on 127.0.0.1."""
        local = {e.container_ip.ip for e in entries if model.publishes_localhost(e, options)}
        names: set[str] = set()
        for address in sorted(local, key=str):
            name = localnet.route_interface(address)
            if not name:
                log.warning("no route to %s: its localhost mappings cannot work", address)
            elif name != "lo":
                names.add(name)
        return sorted(names)

    def delete(self, req: Request, cfg: PortmapConfig, recorded: records.Record | None) -> None:
        """The entries from prevResult, else from our record (by key, not by reading every
        entry), else found by their owner tag."""
        policy = self.policy(req, cfg)
        entries: list[PortMapping] | None = None
        if req.prev_result is not None:
            entries = self.entries(req, cfg, req.prev_result) or None
        if entries is None and recorded is not None:
            from cni_bridge.firewall.recorded import port_entries  # only here: ADD needs none

            entries = port_entries(recorded)[0] or None
        # The conditions are part of the rules' text: iptables' exact removal needs them.
        options = to_options(cfg.options)
        with req.timer.phase("firewall"):
            policy.remove(recorded, lambda b: b.remove_portmappings(policy.owner, entries, options),
                          "port mappings")

    def check(self, req: Request, cfg: PortmapConfig, prev: Result) -> None:
        entries = self.entries(req, cfg, prev)
        if not entries:
            return
        options = to_options(cfg.options)
        policy = self.policy(req, cfg)
        missing = policy.backend().check_portmappings(entries, options)
        for name in self._localnet_interfaces(entries, options):
            value = localnet.read_route_localnet(name)
            if value != "1":
                missing.append(f"sysctl {localnet.sysctl_key(name)} is {value}, expected 1")
        if missing:
            raise CniError(f"port mappings of {policy.owner} are not in place",
                           "; ".join(missing))

    def gc(self, req: Request, cfg: PortmapConfig) -> None:
        self.policy(req, cfg).gc(lambda b, valid: b.gc_portmappings(req.network_name, valid),
                                 "port mappings")

    def status(self, req: Request, cfg: PortmapConfig) -> None:
        self.policy(req, cfg).require_backend("portmap cannot publish ports: ")
