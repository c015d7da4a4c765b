"""Firewall rules for masquerading and host ports, behind one backend-neutral interface.

Plugins build `MasqEntry`/`PortMapping` values (model), pick a backend with `detect_backend`
(or `make_backend` from config; detect) handing it a `CommandRunner` (commands), and call its
verbs (backend: the `Backend` interface). Rooms, low to high; a module imports only its own room
or lower ones:

- errors, names (what never changes), model, commands, backend, noop;
- nft/ (our table ``inet cni_bridge``: constant cost, the default) and iptables/ (the reference
  plugins' chains, byte-compatible); these two never import each other;
- leftovers (an owner's rules in the other layout, swept by removals), detect (which backend,
  wired with its leftovers), recorded (the entries our records describe, for DEL by key,
  ``status``, ``reconcile`` and the resident server's healer).

Errors: every failure is a `CniError` naming the chain, table, element or owner involved, with
the tool's stderr in ``details``; `TryAgainError` (11) when the xtables lock could not be had;
`HostPortConflictError` (110) when a host port is already published by another owner.
"""
