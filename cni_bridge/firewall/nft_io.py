"""The thin layer that runs ``nft``: reads return parsed data, writes are one ``nft -f -`` batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cni_bridge.firewall.nft_state import Listing, parse_get_elements, parse_listing
from cni_bridge.firewall.runner import CommandResult, CommandRunner, check


@dataclass(frozen=True)
class Nft:
    runner: CommandRunner
    binary: str = "nft"

    def usable(self, probe: str) -> bool:
        """Whether the kernel would accept `probe` (``nft --check``: nothing is committed)."""
        return self.runner([self.binary, "-c", "-f", "-"], input=probe + "\n").ok

    def table(self, family: str, name: str) -> Listing | None:
        """One table's contents; None when it does not exist (or nft is unusable).

        Listing one table only fetches that table, whatever else the ruleset holds; ``list
        tables`` would fetch every element of every set.
        """
        result = self.runner([self.binary, "-j", "list", "table", family, name])
        return parse_listing(result.stdout) if result.ok else None

    def skeleton(self, family: str, name: str) -> Listing | None:
        """One table's maps, chains and rules without map elements (``nft --terse``): the same
        cost with 1 or 5,000 containers. None when the table does not exist."""
        result = self.runner([self.binary, "-j", "-t", "list", "table", family, name])
        return parse_listing(result.stdout) if result.ok else None

    def lookup(self, get_lines: Sequence[str]) -> Listing | None:
        """The elements named by ``get element`` lines, in one process; None when any of them
        is missing (nft then fails the whole batch) or nft fails."""
        if not get_lines:
            return Listing()
        result = self.runner([self.binary, "-f", "-"], input="\n".join(get_lines) + "\n")
        return parse_get_elements(result.stdout) if result.ok else None

    def apply(self, lines: Sequence[str]) -> CommandResult:
        """One atomic batch; never raises (callers decide what a failure means)."""
        return self.runner([self.binary, "-f", "-"], input="\n".join(lines) + "\n")

    def apply_checked(self, lines: Sequence[str], what: str) -> None:
        if lines:
            check(self.apply(lines), what)
