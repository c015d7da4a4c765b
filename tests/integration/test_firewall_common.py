"""Helpers shared by the firewall integration tests (plus a check of the helpers themselves).

Every firewall command runs inside a throwaway "host" namespace through `NsRunner`; nothing
here touches the machine's own namespace.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.model import MasqEntry, Owner, PortMapping
from tests.netns import PLUGIN_PATH, Netns

REPO = Path(__file__).resolve().parents[2]


@dataclass
class NsRunner:
    """A CommandRunner running each command in `ns`; records what it ran."""

    ns: Netns
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append(tuple(argv))
        proc = self.ns.run(*argv, input=input, check=False)
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def writes(self) -> list[tuple[str, ...]]:
        """The calls that can change the firewall (restores and nft batches)."""
        return [c for c in self.calls if c[0].endswith("-restore") or c[1:] == ("-f", "-")]


def python_in(ns: Netns, code: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `code` with this checkout's interpreter inside `ns` (the test process never changes
    namespace); its stdout."""
    environ = {"PATH": PLUGIN_PATH, "PYTHONPATH": str(REPO), "LC_ALL": "C", **(env or {})}
    return ns.run(sys.executable, "-c", code, *args, env=environ).stdout


FLUSH = """
import ipaddress, sys
from cni_bridge.firewall.conntrack import flush_udp_conntrack
from cni_bridge.firewall.model import Owner, PortMapping
ip = ipaddress.ip_interface(sys.argv[2])
print(flush_udp_conntrack([PortMapping(Owner("n", "c", "eth0"), "udp", int(sys.argv[1]), ip, 1)]))
"""


def flush_conntrack_in(ns: Netns, host_port: int, container_ip: str) -> int:
    """`flush_udp_conntrack` in `ns` for one UDP host port; how many entries it deleted."""
    return int(json.loads(python_in(ns, FLUSH, str(host_port), container_ip)))


def owner(cid: str, network: str = "mynet", ifname: str = "eth0") -> Owner:
    return Owner(network, cid, ifname)


def masq(o: Owner, *addresses: str) -> list[MasqEntry]:
    return [MasqEntry.of(o, ipaddress.ip_interface(a)) for a in addresses]


def mapping(o: Owner, proto: str, host_port: int, container: str, port: int,
            host_ip: str | None = None) -> PortMapping:
    return PortMapping(o, proto, host_port, ipaddress.ip_interface(container),  # type: ignore[arg-type]
                       port, ipaddress.ip_address(host_ip) if host_ip else None)


def nat_save(ns: Netns, version: int = 4) -> dict[str, list[str]]:
    """``iptables-save -t nat`` as {chain: [rules]} (counters and headers dropped)."""
    tool = "iptables-save" if version == 4 else "ip6tables-save"
    chains: dict[str, list[str]] = {}
    for line in ns.run(tool, "-t", "nat").stdout.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            chains.setdefault(chain, []).append(re.sub(r"^\[\d+:\d+\] ", "", rule))
    return chains


def cni_chains(chains: dict[str, list[str]]) -> dict[str, list[str]]:
    """Only our/reference chains and the jumps into them from the built-in chains."""
    out = {c: r for c, r in chains.items() if c.startswith("CNI-")}
    for builtin in ("PREROUTING", "OUTPUT", "POSTROUTING"):
        jumps = [r for r in chains.get(builtin, []) if " -j CNI-" in f" {r}"]
        if jumps:
            out[builtin] = jumps
    return out


def test_ns_runner_runs_inside_the_namespace(host_ns: Netns) -> None:
    runner = NsRunner(host_ns)
    result = runner(["ip", "-o", "link", "show"])
    assert result.ok
    assert "uplink" not in result.stdout  # a fresh namespace: only lo
    assert runner.calls == [("ip", "-o", "link", "show")]
