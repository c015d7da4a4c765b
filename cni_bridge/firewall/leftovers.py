"""An owner's leftovers in the other layout, swept by removals: a node can change backend (or
move from the reference plugins) while containers run. Wired here and in ``detect``, so neither
backend knows the other; iptables is looked at only where ``iptables -S`` finds the chain.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.backend import Removal
from cni_bridge.firewall.commands import XTABLES_LOCK_WAIT, CommandRunner
from cni_bridge.firewall.model import IPInterface, Owner, PortmapOptions, PortMapping


class IptablesLeftovers:
    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        chain = names.masq_chain_name(owner.network, owner.container_id)
        if self._holds(chain, {4, 6} if addresses is None else {a.version for a in addresses}):
            self._backend().remove_masquerade(owner, addresses)

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None:
        chain = names.dnat_chain_name(owner.network, owner.container_id)
        if self._holds(chain, {4, 6} if entries is None else {e.version for e in entries}):
            self._backend().remove_portmappings(owner, entries, options)

    def _holds(self, chain: str, versions: Collection[int]) -> bool:
        tools = [("iptables", "ip6tables")[v == 6] for v in sorted(versions)]
        return any(self._runner([tool, "-w", str(XTABLES_LOCK_WAIT), "-t", "nat", "-S", chain]).ok
                   for tool in tools)

    def _backend(self) -> Removal:
        from cni_bridge.firewall.iptables.backend import IptablesBackend

        return IptablesBackend(self._runner)
