"""Running an nft script: in-process through libnftables, or with the ``nft`` command.

Everything the firewall layer sends to nftables is nft script text (batches, ``list``, ``get
element``), run by an `NftExecutor`. Two implementations, chosen in `client.nft_executor` alone:

- `libnft.InProcessNft` for the production runner (`SubprocessRunner`): the script goes to
  libnftables in this process, so a plugin call starts no ``nft`` process; when the library
  cannot be loaded here it falls back to the command;
- `NftCommand` for any other runner (tests that record commands or run them in a namespace):
  ``nft [-c] -f -`` with the script on stdin, or ``nft -j [-t] <command>`` for JSON output,
  through that runner.

Both return a `CommandResult` shaped like the command's (its argv, exit status 1 on failure,
nft's error text), so callers and error messages do not depend on which one ran. Where nftables
runs here, keyed reads go straight to the kernel (see client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cni_bridge.firewall.commands import CommandResult, CommandRunner

NFT = "nft"


class NftExecutor(Protocol):
    """Runs one nft script (one transaction for its changes); never raises for a failure.

    `json`: list output as JSON (``-j``; the script is then one command); `terse`: without
    set/map elements (``-t``); `dry_run`: check the script against the kernel, commit nothing
    (``-c``).
    """

    def __call__(self, script: str, *, json: bool = False, terse: bool = False,
                 dry_run: bool = False) -> CommandResult: ...


def nft_command(binary: str, script: str, *, json: bool, terse: bool,
                dry_run: bool) -> tuple[tuple[str, ...], str | None]:
    """The command line (and its stdin) that runs `script` with these options. A script for
    JSON output goes on the command line, as one command: ``nft -j -f -`` prints nothing."""
    flags = [flag for flag, on in (("-j", json), ("-t", terse), ("-c", dry_run)) if on]
    if json:
        if "\n" in script.strip():
            raise ValueError("JSON output is for one command at a time")
        return (binary, *flags, *script.split()), None
    return (binary, *flags, "-f", "-"), script


@dataclass(frozen=True)
class NftCommand:
    """The ``nft`` executable, through a `CommandRunner`."""

    runner: CommandRunner
    binary: str = NFT

    def __call__(self, script: str, *, json: bool = False, terse: bool = False,
                 dry_run: bool = False) -> CommandResult:
        argv, stdin = nft_command(self.binary, script, json=json, terse=terse, dry_run=dry_run)
        return self.runner(argv, input=stdin)
