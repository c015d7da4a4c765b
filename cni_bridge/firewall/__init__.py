"""Firewall rules for masquerading and host ports, behind one backend-neutral interface.

Plugins build `MasqEntry`/`PortMapping` values, pick a backend with `detect_backend` (or
`make_backend` from config) handing it a `CommandRunner`, and call its verbs (see `Backend`).

Backends: `NftablesBackend` (our table ``inet cni_bridge``, constant cost, the default),
`IptablesBackend` (the reference plugins' chains, byte-compatible), `NoopBackend`.

Errors: every failure is a `CniError` naming the chain, table, element or owner involved, with
the tool's stderr in ``details``; `TryAgainError` (11) when the xtables lock could not be had;
`HostPortConflictError` (110) when a host port is already published by another owner.
"""

# The package's names are loaded on first use (PEP 562): a plugin importing one submodule must
# not pay for every backend (each plugin call pays for each import).
_HOMES = {
    "Backend": "backend",
    "flush_udp_conntrack": "conntrack",
    "BACKEND_NAMES": "detect", "detect_backend": "detect", "make_backend": "detect",
    "HostPortConflictError": "errors",
    "IptablesBackend": "iptables",
    "MasqEntry": "model", "Owner": "model", "PortmapOptions": "model", "PortMapping": "model",
    "conditions_backend": "model", "needs_route_localnet": "model",
    "validate_mappings": "model",
    "NftablesBackend": "nftables",
    "NoopBackend": "noop",
    "CommandResult": "runner", "CommandRunner": "runner", "SubprocessRunner": "runner",
}

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

TYPE_CHECKING = False
if TYPE_CHECKING:
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


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)
