"""Removing what our own ADD wrote in iptables by the rules' exact text, before reading anything
(pure planners).

A DEL whose record proves the owner's state is ours (in this layout alone) sends these as one
``iptables-restore`` per family, without an ``iptables-save`` first. They are safe to try
blind: a rule is deleted only by a matching spec, a chain only once nothing jumps to it, and a
restore is all or nothing. When anything differs from what our ADD wrote (a second attachment
sharing the masquerade chain, rules already gone, conditions changed since the ADD), the restore
fails as a whole and the backend reads the table and plans exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.save import RestoreScript
from cni_bridge.firewall.model import IPInterface, MasqEntry, Owner, PortmapOptions, PortMapping


def masq_removal(owner: Owner, addresses: Sequence[IPInterface]) -> RestoreScript:
    """The POSTROUTING jump of each address, then the owner's chain."""
    chain = names.masq_chain_name(owner.network, owner.container_id)
    script = RestoreScript()
    script.extend(f"-D POSTROUTING {ipt_masq.jump_rule(MasqEntry.of(owner, a))}"
                  for a in addresses)
    script.extend([f"-F {chain}", f"-X {chain}"])
    return script


def portmap_removal(owner: Owner, entries: Sequence[PortMapping], version: int,
                    options: PortmapOptions) -> RestoreScript:
    """The ``CNI-HOSTPORT-DNAT`` jumps our ADD wrote for `entries` (the whole config, in config
    order) with `options` (their conditions are part of the rules' text), then the owner's
    ``CNI-DN-`` chain."""
    chain = names.dnat_chain_name(owner.network, owner.container_id)
    script = RestoreScript()
    script.extend(f"-D {names.HOSTPORT_DNAT_CHAIN} {rule}" for rule in
                  ipt_portmap.entry_rules(owner, entries, version, options))
    script.extend([f"-F {chain}", f"-X {chain}"])
    return script
