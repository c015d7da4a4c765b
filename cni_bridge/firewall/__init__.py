"""Firewall rules for masquerading and host ports, behind one backend-neutral interface.

Plugins build `MasqEntry`/`PortMapping` values, pick a backend with `detect_backend` (or
`make_backend` from config) handing it a `CommandRunner`, and call its verbs (see `Backend`).

Backends: `NftablesBackend` (our table ``inet cni_bridge``, constant cost, the default),
`IptablesBackend` (the reference plugins' chains, byte-compatible), `NoopBackend`.

Errors: every failure is a `CniError` naming the chain, table, element or owner involved, with
the tool's stderr in ``details``; `TryAgainError` (11) when the xtables lock could not be had;
`HostPortConflictError` (110) when a host port is already published by another owner.
"""
