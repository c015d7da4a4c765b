"""Removing what our ADD wrote in iptables by the rules' exact text, unread (pure planners).

Safe blind: a rule goes only by a matching spec, a chain only once unused, and a restore is all
or nothing; when anything differs from what our ADD wrote, it fails whole and the backend reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.save import RestoreScript
from cni_bridge.firewall.model import IPInterface, MasqEntry, Owner, PortmapOptions, PortMapping


def masq_removal(owner: Owner, addresses: Sequence[IPInterface]) -> RestoreScript:
    chain = names.masq_chain_name(owner.network, owner.container_id)
    script = RestoreScript()
    script.extend(f"-D POSTROUTING {ipt_masq.jump_rule(MasqEntry.of(owner, a))}"
                  for a in addresses)
    script.extend([f"-F {chain}", f"-X {chain}"])
    return script


def portmap_removal(owner: Owner, entries: Sequence[PortMapping], version: int,
                    options: PortmapOptions) -> RestoreScript:
    """`entries`: the whole config, in order; `options`: their conditions are in the rules."""
    chain = names.dnat_chain_name(owner.network, owner.container_id)
    script = RestoreScript()
    script.extend(f"-D {names.HOSTPORT_DNAT_CHAIN} {rule}" for rule in
                  ipt_portmap.entry_rules(owner, entries, version, options))
    script.extend([f"-F {chain}", f"-X {chain}"])
    return script
