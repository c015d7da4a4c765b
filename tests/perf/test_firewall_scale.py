"""The cost of one container's ADD+DEL with 0 and with 2,000 other containers present.

For each backend: masquerade for one address plus two port mappings, added then removed, timed
(median of several rounds, tool start-up and ``ip netns exec`` included). The nftables backend
must stay flat; the iptables numbers are measured for comparison only (its tables grow).
A measurement, not part of tests/run.sh: ``pytest tests/perf/test_firewall_scale.py -s`` (root,
about 2 minutes) prints the numbers; the one assertion is a coarse flatness check.
"""

from __future__ import annotations

import ipaddress
import statistics
import time
from collections.abc import Callable
from functools import partial

import pytest

from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.save import NatState
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.nft import plan as nft_plan
from cni_bridge.firewall.nft import schema as nft_schema
from tests.integration.test_firewall_common import NsRunner, mapping, masq, owner
from tests.netns import Netns

EXISTING = 2000
ROUNDS = 7
OPTS = PortmapOptions()


def population(count: int) -> tuple[list[MasqEntry], list[PortMapping]]:
    entries: list[MasqEntry] = []
    mappings: list[PortMapping] = []
    base = ipaddress.IPv4Address("10.100.0.2")
    for i in range(count):
        o = owner(f"existing{i}")
        ip = f"{base + i}/16"
        entries += masq(o, ip)
        mappings += [mapping(o, "tcp", 20000 + i, ip, 80), mapping(o, "udp", 20000 + i, ip, 53)]
    return entries, mappings


def populate_nft(ns: Netns, count: int) -> None:
    entries, mappings = population(count)
    lines = nft_schema.masq_table_lines(entries) + nft_plan.plan_add(
        [p for e in entries for p in nft_plan.masq_elements(e)])
    lines += nft_schema.hostport_table_lines((), (), True, nft_plan.hairpin_subnets(
        mappings, OPTS)) + nft_plan.plan_add(nft_plan.portmap_elements(mappings, OPTS))
    ns.run("nft", "-f", "-", input="\n".join(lines) + "\n", timeout=300)


def populate_iptables(ns: Netns, count: int) -> None:
    entries, mappings = population(count)
    script = ipt_masq.plan_add_masquerade(NatState(), entries)
    by_owner: dict[Owner, list[PortMapping]] = {}
    for m in mappings:
        by_owner.setdefault(m.owner, []).append(m)
    state = NatState()
    for o, mine in by_owner.items():
        script.merge(ipt_portmap.plan_add_portmappings(state, o, mine, 4, OPTS))
        if not state.chains:  # after the first owner, the shared chains and jumps exist
            shared: dict[str, list[str]] = {}
            for chain, rule, _ in ipt_portmap.desired_rules(o, mine, 4, OPTS):
                if not chain.startswith("CNI-DN-"):
                    shared.setdefault(chain, []).append(rule)
            state = NatState({c: tuple(r) for c, r in shared.items()})
    for chain in script.shared:  # made outside the restore, as the backend does
        ns.run("iptables", "-t", "nat", "-N", chain)
    ns.run("iptables-restore", "--noflush", input=script.render(), timeout=600)


def one_round(backend: Backend) -> float:
    o = owner("measured")
    entries = masq(o, "10.99.0.2/16")
    pms = [mapping(o, "tcp", 8080, "10.99.0.2/16", 80), mapping(o, "udp", 8053, "10.99.0.2/16", 53)]
    started = time.perf_counter()
    backend.add_masquerade(entries)
    backend.add_portmappings(pms, OPTS)
    backend.remove_portmappings(o, pms)
    backend.remove_masquerade(o, [e.address for e in entries])
    return time.perf_counter() - started


def median_ms(backend: Backend) -> float:
    one_round(backend)  # warm up (creates the skeleton / shared chains)
    return statistics.median(one_round(backend) for _ in range(ROUNDS)) * 1000


Populate = Callable[[Netns, int], None]


@pytest.mark.parametrize(("name", "make", "populate"), [
    ("nftables", partial(make_backend, "nftables"), populate_nft),  # as the plugins make them:
    ("iptables", partial(make_backend, "iptables"), populate_iptables),  # leftovers swept too
])
def test_cost_with_and_without_existing_containers(
        name: str, make: Callable[[NsRunner], Backend], populate: Populate,
        netns: Callable[[str], Netns]) -> None:
    empty, full = netns("H"), netns("H")
    populate(full, EXISTING)
    runner = NsRunner(empty)
    cost_empty = median_ms(make(runner))
    calls = len(runner.calls) // (ROUNDS + 1)
    cost_full = median_ms(make(NsRunner(full)))
    print(f"\n{name}: add+remove (masquerade + 2 mappings), {calls} tool calls: "
          f"{cost_empty:.1f} ms with 0 others, {cost_full:.1f} ms with {EXISTING} others")
    if name == "nftables":
        assert cost_full < cost_empty * 1.5 + 10, "nftables cost grows with the container count"
