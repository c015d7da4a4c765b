"""Firewall rules for masquerading and host ports, behind one backend-neutral interface.

Plugins build `MasqEntry`/`PortMapping` values, pick a backend with `detect_backend` (or
`make_backend` from config) handing it a `CommandRunner`, and call its verbs (see `Backend`).

Backends: `NftablesBackend` (our table ``inet cni_bridge``, constant cost, the default),
`IptablesBackend` (the reference plugins' chains, byte-compatible), `NoopBackend`.

Errors: every failure is a `CniError` naming the chain, table, element or owner involved, with
the tool's stderr in ``details``; `TryAgainError` (11) when the xtables lock could not be had;
`HostPortConflictError` (110) when a host port is already published by another owner.
"""

from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.conntrack import flush_udp_conntrack
from cni_bridge.firewall.detect import BACKEND_NAMES, detect_backend, make_backend
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.iptables import IptablesBackend
from cni_bridge.firewall.model import (
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    conditions_backend,
    needs_route_localnet,
    validate_mappings,
)
from cni_bridge.firewall.nftables import NftablesBackend
from cni_bridge.firewall.noop import NoopBackend
from cni_bridge.firewall.runner import CommandResult, CommandRunner, SubprocessRunner

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "CommandResult",
    "CommandRunner",
    "HostPortConflictError",
    "IptablesBackend",
    "MasqEntry",
    "NftablesBackend",
    "NoopBackend",
    "Owner",
    "PortMapping",
    "PortmapOptions",
    "SubprocessRunner",
    "conditions_backend",
    "detect_backend",
    "flush_udp_conntrack",
    "make_backend",
    "needs_route_localnet",
    "validate_mappings",
]
