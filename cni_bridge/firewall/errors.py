"""Errors specific to the firewall layer (all are `CniError`s)."""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.cni.errors import CniError

# Plugin-specific code (CNI leaves 100+ to plugins): a host port is already published.
HOST_PORT_CONFLICT = 110


class HostPortConflictError(CniError):
    """ADD asked for a host port another owner already publishes; the message names the owner."""

    code = HOST_PORT_CONFLICT

    def __init__(self, msg: str, details: str = "",
                 holders: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(msg, details)
        self.holders = list(holders)  # (host port, holder)
