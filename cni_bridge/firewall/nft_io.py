"""The thin layer that talks to nftables: reads return parsed data, writes are one batch.

Scripts run through an `NftExecutor` (in-process libnftables in production; see nft_exec).
"""

from __future__ import annotations

from collections.abc import Sequence

from cni_bridge.firewall.nft_exec import NFT, nft_executor
from cni_bridge.firewall.nft_state import Listing, parse_get_elements, parse_listing
from cni_bridge.firewall.runner import CommandResult, CommandRunner, check


class Nft:
    def __init__(self, runner: CommandRunner, binary: str = NFT) -> None:
        self.run = nft_executor(runner, binary)

    def usable(self, probe: str) -> bool:
        """Whether the kernel would accept `probe` (a dry run: nothing is committed)."""
        return self.run(probe + "\n", dry_run=True).ok

    def list_json(self, what: str) -> CommandResult:
        """``list <what>`` as JSON, e.g. ``table inet cni_bridge`` or ``chain bridge nat X``."""
        return self.run(f"list {what}\n", json=True)

    def table(self, family: str, name: str) -> Listing | None:
        """One table's contents; None when it does not exist (or nft is unusable).

        Listing one table only fetches that table, whatever else the ruleset holds; ``list
        tables`` would fetch every element of every set.
        """
        result = self.list_json(f"table {family} {name}")
        return parse_listing(result.stdout) if result.ok else None

    def skeleton(self, family: str, name: str) -> Listing | None:
        """One table's maps, chains and rules without map elements (terse): the same cost with
        1 or 5,000 containers. None when the table does not exist."""
        result = self.run(f"list table {family} {name}\n", json=True, terse=True)
        return parse_listing(result.stdout) if result.ok else None

    def lookup(self, get_lines: Sequence[str]) -> Listing | None:
        """The elements named by ``get element`` lines, in one run; None when any of them is
        missing (nft then fails the whole script) or nft fails."""
        if not get_lines:
            return Listing()
        result = self.run("\n".join(get_lines) + "\n")
        return parse_get_elements(result.stdout) if result.ok else None

    def all_exist(self, get_lines: Sequence[str]) -> bool:
        """Whether every element named by ``get element`` lines exists (one run)."""
        return not get_lines or self.run("\n".join(get_lines) + "\n").ok

    def apply(self, lines: Sequence[str]) -> CommandResult:
        """One atomic batch; never raises (callers decide what a failure means)."""
        return self.run("\n".join(lines) + "\n")

    def apply_checked(self, lines: Sequence[str], what: str) -> None:
        if lines:
            check(self.apply(lines), what)
