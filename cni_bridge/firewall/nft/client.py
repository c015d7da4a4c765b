"""The thin layer that talks to nftables: reads return parsed data, writes are one batch.

Keyed reads go to the kernel over netlink where nftables runs in this process (libnftables
would first fetch every element of every set); through a test's runner they are nft scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from cni_bridge.diag import logger
from cni_bridge.firewall import names
from cni_bridge.firewall.commands import CommandResult, CommandRunner, SubprocessRunner, check
from cni_bridge.firewall.nft import netlink as nft_netlink
from cni_bridge.firewall.nft.executor import NFT, NftCommand, NftExecutor
from cni_bridge.firewall.nft.plan import get_line
from cni_bridge.firewall.nft.state import (
    Element,
    Key,
    Listing,
    Rule,
    parse_get_elements,
    parse_listing,
)

log = logger(__name__)
T = TypeVar("T")


def runs_here(runner: CommandRunner, binary: str = NFT) -> bool:
    """Only the production runner reaches nftables from this process, in its own namespace."""
    return isinstance(runner, SubprocessRunner) and binary == NFT


def nft_executor(runner: CommandRunner, binary: str = NFT) -> NftExecutor:
    command = NftCommand(runner, binary)
    if runs_here(runner, binary):
        from cni_bridge.firewall.nft.libnft import InProcessNft

        return InProcessNft(command)
    return command


class Nft:
    def __init__(self, runner: CommandRunner, binary: str = NFT) -> None:
        self.run = nft_executor(runner, binary)
        self._direct = runs_here(runner, binary)

    def usable(self, probe: str) -> bool:
        return self.run(probe + "\n", dry_run=True).ok

    def list_json(self, what: str) -> CommandResult:
        """``list <what>`` as JSON, e.g. ``table inet cni_bridge`` or ``chain bridge nat X``."""
        return self.run(f"list {what}\n", json=True)

    def table(self, family: str, name: str) -> Listing | None:
        """None when it does not exist (or nft is unusable)."""
        result = self.list_json(f"table {family} {name}")
        return parse_listing(result.stdout) if result.ok else None

    def _read(self, what: str, direct: Callable[[], T], via_nft: Callable[[], T]) -> T:
        if self._direct:
            try:
                return direct()
            except OSError as exc:
                log.debug("netlink read of %s failed (%s): asking nft", what, exc)
        return via_nft()

    def outline(self, family: str, name: str) -> Listing | None:
        """Maps, and chains with rule counts, without elements (a constant cost); None: no
        table."""
        def via_nft() -> Listing | None:
            result = self.run(f"list table {family} {name}\n", json=True, terse=True)
            return parse_listing(result.stdout) if result.ok else None

        return self._read(f"table {family} {name}",
                          lambda: nft_netlink.skeleton(family, name), via_nft)

    def lookup(self, elements: Sequence[Element]) -> Listing | None:
        """`elements` as our table holds them; None when any is missing or the read fails."""
        if not elements:
            return Listing()

        def via_nft() -> Listing | None:
            result = self.run("\n".join(get_line(el) for el in elements) + "\n")
            return parse_get_elements(result.stdout) if result.ok else None

        return self._read("elements", lambda: nft_netlink.elements(
            names.NFT_FAMILY, names.NFT_TABLE, elements), via_nft)

    def chain_rules(self, family: str, table: str, chain: str) -> tuple[Rule, ...] | None:
        def via_nft() -> tuple[Rule, ...] | None:
            result = self.list_json(f"chain {family} {table} {chain}")
            return parse_listing(result.stdout).rules if result.ok else None

        return self._read(f"chain {chain}", lambda: nft_netlink.chain_rules(
            family, table, chain), via_nft)

    def has_elements(self, family: str, table: str, set_name: str, key_type: str,
                     keys: Sequence[Key]) -> bool:
        """Whether set `set_name` (keys of `key_type`, e.g. ``ifname . ifname``) holds every
        key of `keys`."""
        def via_nft() -> bool:
            quote = "ifname" in key_type  # names are quoted in scripts, nothing else we look up is
            lines = [f"get element {family} {table} {set_name} {{ "
                     + " . ".join(f'"{f}"' if quote else f for f in key) + " }" for key in keys]
            return not lines or self.run("\n".join(lines) + "\n").ok

        return self._read(f"set {set_name}", lambda: nft_netlink.has_elements(
            family, table, set_name, key_type, keys), via_nft)

    def apply(self, lines: Sequence[str]) -> CommandResult:
        return self.run("\n".join(lines) + "\n")

    def apply_checked(self, lines: Sequence[str], what: str) -> None:
        if lines:
            check(self.apply(lines), what)

