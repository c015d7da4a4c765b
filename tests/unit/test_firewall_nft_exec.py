"""How nft scripts are run (no root): the one place that picks in-process or the command, the
command lines of the command, and nothing loaded at import time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from cni_bridge.firewall.commands import CommandResult, SubprocessRunner
from cni_bridge.firewall.nft.client import nft_executor
from cni_bridge.firewall.nft.executor import NftCommand, nft_command
from cni_bridge.firewall.nft.libnft import InProcessNft


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append((tuple(argv), input))
        return CommandResult(tuple(argv), 0)


def test_the_production_runner_gets_libnftables_any_other_the_command() -> None:
    production = nft_executor(SubprocessRunner())
    assert isinstance(production, InProcessNft)
    assert production.fallback == NftCommand(SubprocessRunner())
    recorder = Recorder()
    assert nft_executor(recorder) == NftCommand(recorder)
    assert isinstance(nft_executor(SubprocessRunner(), "/opt/nft"), NftCommand)


def test_command_lines() -> None:
    recorder = Recorder()
    run = NftCommand(recorder)
    run("add table inet t\n")
    run("add table inet t\n", dry_run=True)
    run("list table inet cni_bridge\n", json=True, terse=True)
    assert recorder.calls == [
        (("nft", "-f", "-"), "add table inet t\n"),
        (("nft", "-c", "-f", "-"), "add table inet t\n"),
        (("nft", "-j", "-t", "list", "table", "inet", "cni_bridge"), None)]
    with pytest.raises(ValueError, match="one command"):
        nft_command("nft", "list table a b\nlist table c d\n", json=True, terse=False,
                    dry_run=False)


def test_importing_the_firewall_loads_no_library() -> None:
    """A resident server forks children that enter another namespace before any work: nothing
    may open a netfilter socket, or even load libnftables, at import time."""
    code = ("import sys, cni_bridge.firewall, cni_bridge.firewall.nft.backend, "
            "cni_bridge.firewall.nft.client\n"
            "print('cni_bridge.firewall.nft.libnft' in sys.modules)\n"
            "from cni_bridge.firewall.nft import libnft as nft_lib\n"
            "print(nft_lib._process.lib, nft_lib._process.context)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["False", "None None"]


def test_the_portmap_firewall_path_imports_no_process_machinery() -> None:
    """Nothing on portmap's path starts a process any more: ``subprocess`` (and the ``signal``
    and ``socket`` enums it would build, ~7 ms per call) is imported only when a tool runs."""
    code = ("import sys, cni_bridge.portmap.ops, cni_bridge.firewall.nft.libnft\n"
            "print(sorted(m for m in ('subprocess', 'signal', 'socket') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_netlink_keys_are_laid_out_as_the_kernel_holds_them() -> None:
    """Concatenations take whole 32-bit registers per field; ports and addresses are in
    network order, marks in host order; names are NUL-padded to IFNAMSIZ."""
    from cni_bridge.firewall.nft.netlink import decode, encode

    concat = "ipv4_addr . inet_proto . inet_service"
    key = encode(concat, ("10.0.0.1", "udp", "53"))
    assert key == bytes([10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0])
    assert decode(concat, key) == ("10.0.0.1", "udp", "53")
    assert encode("inet_service", ("8080",)) == b"\x1f\x90"  # alone: no padding
    assert decode("ipv6_addr . inet_service", bytes(15) + b"\x01\x00\x50\x00\x00") == (
        "::1", "80")
    assert decode("mark", (1015067090).to_bytes(4, sys.byteorder)) == ("1015067090",)
    assert encode("ifname . ifname", ("br0", "br0")) == (b"br0" + bytes(13)) * 2
    assert decode("ifname", b"br0" + bytes(13)) == ("br0",)
