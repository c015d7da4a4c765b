"""Running an nft script: in-process through libnftables, or with the ``nft`` command.

`libnft.InProcessNft` serves the production runner (no ``nft`` process per call); `NftCommand`
any other runner (tests). Both return a `CommandResult` shaped like the command's (argv, exit
status 1, nft's error text), so messages do not depend on which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cni_bridge.firewall.commands import CommandResult, CommandRunner

NFT = "nft"


class NftExecutor(Protocol):
    """Runs one nft script (one transaction); never raises. `json`, `terse`, `dry_run`: nft's
    ``-j`` (the script is then one command), ``-t`` and ``-c``."""

    def __call__(self, script: str, *, json: bool = False, terse: bool = False,
                 dry_run: bool = False) -> CommandResult: ...


def nft_command(binary: str, script: str, *, json: bool, terse: bool,
                dry_run: bool) -> tuple[tuple[str, ...], str | None]:
    """Argv and stdin. A JSON script goes on the command line: ``nft -j -f -`` prints nothing."""
    flags = [flag for flag, on in (("-j", json), ("-t", terse), ("-c", dry_run)) if on]
    if json:
        if "\n" in script.strip():
            raise ValueError("JSON output is for one command at a time")
        return (binary, *flags, *script.split()), None
    return (binary, *flags, "-f", "-"), script


@dataclass(frozen=True)
class NftCommand:
    runner: CommandRunner
    binary: str = NFT

    def __call__(self, script: str, *, json: bool = False, terse: bool = False,
                 dry_run: bool = False) -> CommandResult:
        argv, stdin = nft_command(self.binary, script, json=json, terse=terse, dry_run=dry_run)
        return self.runner(argv, input=stdin)
