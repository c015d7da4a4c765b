"""Firewall rules for masquerading and host ports, behind one backend-neutral interface.

Rooms, low to high (a module imports only its own room or lower ones): errors, names, model,
commands, backend, noop; nft/ and iptables/ (never importing each other); leftovers, detect,
recorded, policy. Every failure is a `CniError` naming the chain, table, element or owner.
"""
