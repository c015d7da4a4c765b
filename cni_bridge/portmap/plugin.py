"""The portmap plugin: publish container ports on the host (REFERENCE.md §4).

A call without mappings (the common case: the runtime calls portmap for every container) loads
no firewall module and runs no tool (USERS.md item 2): `portmap.ops` is imported only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import Result
from cni_bridge.node import records
from cni_bridge.portmap.config import RECORD_PLUGIN, load_config

if TYPE_CHECKING:
    from cni_bridge.firewall.commands import CommandRunner
    from cni_bridge.portmap.ops import PortmapOps


class PortmapPlugin:
    def __init__(self, runner: CommandRunner | None = None) -> None:
        self._runner = runner

    def _ops(self) -> PortmapOps:
        from cni_bridge.portmap.ops import PortmapOps

        return PortmapOps(self._runner)

    def add(self, req: Request) -> Result:
        cfg = load_config(req)
        prev = req.prev_result
        if prev is None:
            raise ConfigError("must be called as chained plugin",
                              "portmap needs the previous plugin's result (prevResult)")
        if cfg.mappings:
            self._ops().add(req, cfg, prev)
        return prev

    def delete(self, req: Request) -> None:
        """Without mappings, a no-op unless our record shows this attachment published ports
        (a runtime that does not repeat the mappings on DEL must not leak rules)."""
        cfg = load_config(req)
        recorded = records.find_record(records.state_root(), req.network_name,
                                       req.env.container_id, req.env.ifname, RECORD_PLUGIN)
        if cfg.mappings or recorded is not None:
            self._ops().delete(req, cfg, recorded)

    def check(self, req: Request) -> None:
        cfg = load_config(req)
        if req.prev_result is None:
            raise CniError("Required prevResult missing", "CHECK needs the result of ADD")
        if cfg.mappings:
            self._ops().check(req, cfg, req.prev_result)

    def gc(self, req: Request) -> None:
        self._ops().gc(req, load_config(req))

    def status(self, req: Request) -> None:
        self._ops().status(req, load_config(req))
