"""What bridge's masquerade and portmap share: the owner, the record, the backend, DEL and GC.

DEL removes with the backend the record names (a record proves where the state is); without one
(the reference's ADD, a lost record, a repeated DEL) with every usable backend, whatever the
config says now. GC and DEL report every backend's failure; one failing stops no other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cni_bridge.cni.errors import PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.request import Request
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import CommandRunner
from cni_bridge.firewall.detect import (
    BACKEND_NAMES,
    detect_backend,
    is_usable,
    make_backend,
    recorded_backend,
)
from cni_bridge.firewall.model import Owner
from cni_bridge.node import records

log = logger(__name__)


def owner_of(req: Request) -> Owner:
    return Owner(req.network_name, req.env.container_id, req.env.ifname)


@dataclass(frozen=True)
class Policy:
    """`plugin` names its records; `requested` is the configured backend (None: detect)."""

    req: Request
    plugin: str
    runner: CommandRunner
    requested: str | None = None

    @property
    def owner(self) -> Owner:
        return owner_of(self.req)

    def backend(self) -> Backend:
        return detect_backend(self.runner, self.requested)

    def require_backend(self, prefix: str) -> None:
        """STATUS: a usable backend, else PLUGIN_NOT_AVAILABLE with `prefix` before the why."""
        try:
            self.backend()
        except CniError as exc:
            raise CniError(f"{prefix}{exc.msg}", exc.details, code=PLUGIN_NOT_AVAILABLE) from None

    def usable_backends(self) -> list[Backend]:
        names = [n for n in BACKEND_NAMES if n != "none"]
        if self.requested in names:
            names.sort(key=lambda n: n != self.requested)
        # Every usable backend runs: each cleans its own layout, so none sweeps the others'.
        return [b for b in (make_backend(n, self.runner, leftovers=False) for n in names)
                if is_usable(b)]

    def record(self) -> records.Record | None:
        return records.find_record(records.state_root(), self.req.network_name,
                                   self.req.env.container_id, self.req.env.ifname, self.plugin)

    def save_record(self, data: dict[str, Any]) -> None:
        try:
            records.save_record(records.state_root(), records.Record(
                self.req.network_name, self.req.env.container_id, self.req.env.ifname,
                self.plugin, data))
        except OSError as exc:  # the rules are in; only reconcile/status lose sight of them
            log.warning("cannot write the %s record of %s: %s", self.plugin, self.owner, exc)

    def remove(self, rec: records.Record | None, remove: Callable[[Backend], None],
               what: str) -> None:
        found = recorded_backend(rec.data.get("backend"), self.runner) if rec else None
        backends = [found] if found is not None else self.usable_backends()
        if not backends:
            log.warning("no usable firewall backend: no %s of %s to remove", what, self.owner)
        errors = _each(backends, remove)
        if errors:
            raise CniError(f"cannot remove {what} of {self.owner}",
                           "; ".join(f"{name}: {exc}" for name, exc in errors),
                           code=errors[0][1].code)
        records.remove_record(records.state_root(), self.req.network_name,
                              self.req.env.container_id, self.req.env.ifname, self.plugin)

    def gc(self, collect: Callable[[Backend, list[Owner]], list[str]], what: str) -> None:
        network, keep = self.req.network_name, self.req.valid_attachments()
        valid = [Owner(network, cid, ifname) for cid, ifname in keep]

        def sweep(backend: Backend) -> None:
            for removed in collect(backend, valid):
                log.info("GC %s: removed %s", backend.name, removed)

        errors = _each(self.usable_backends(), sweep)
        root = records.state_root()
        for rec in records.list_records(root, network):
            if rec.plugin == self.plugin and (rec.container_id, rec.ifname) not in keep:
                records.remove_record(root, rec.network, rec.container_id, rec.ifname, rec.plugin)
        if errors:
            raise CniError(f"GC of the {what} of network {network} failed",
                           "; ".join(f"{name}: {exc}" for name, exc in errors))


def _each(backends: list[Backend], step: Callable[[Backend], None]) -> list[tuple[str, CniError]]:
    errors = []
    for backend in backends:
        try:
            step(backend)
        except CniError as exc:
            errors.append((backend.name, exc))
    return errors
