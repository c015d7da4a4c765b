"""An owner's leftovers in the layout other than the one in use, swept by removals.

A node can change firewall backend while containers run (or move from the reference plugins to
ours): a DEL then finds the owner's rules where its ADD put them. So each backend's removals,
after its own layout, hand the owner to the other layout, wired here and in ``detect`` so that
neither backend knows the other:

- after nftables, iptables: only where ``iptables -S <the owner's chain>`` finds the chain (one
  process per family concerned; the iptables modules are imported only then);
- after iptables, our nftables table and the reference's nft rules: one batch, in-process.

A removal from our own record looks at the recorded layout alone (``detect.recorded_backend``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cni_bridge.firewall import names
from cni_bridge.firewall.backend import Removal
from cni_bridge.firewall.commands import XTABLES_LOCK_WAIT, CommandRunner
from cni_bridge.firewall.model import IPInterface, Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.nft.backend import NftablesBackend


class IptablesLeftovers:
    """The owner's chains in iptables, removed by the iptables backend where they exist."""

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


def nftables_leftovers(runner: CommandRunner) -> Removal:
    """Our table's elements and the reference's nft rules of an owner (the nftables backend's
    own removal, reference layouts included)."""
    return NftablesBackend(runner)
