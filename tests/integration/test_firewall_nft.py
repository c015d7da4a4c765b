"""nftables backend against a real kernel, in a throwaway host namespace."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni_bridge.firewall import names as n
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.iptables.backend import IptablesBackend
from cni_bridge.firewall.model import PortmapOptions
from cni_bridge.firewall.nft.backend import NftablesBackend
from cni_bridge.firewall.nft.client import Nft
from tests.integration.test_firewall_common import NsRunner, mapping, masq, owner
from tests.netns import Netns

OPTS = PortmapOptions()


def elements(ns: Netns) -> dict[str, list[Any]]:
    """{map: [elements]} of our table, as nft prints them in JSON."""
    out = ns.run("nft", "-j", "list", "table", "inet", n.NFT_TABLE, check=False)
    if out.returncode != 0:
        return {}
    maps = [o["map"] for o in json.loads(out.stdout)["nftables"] if "map" in o]
    return {m["name"]: m.get("elem", []) for m in maps}


def count(ns: Netns) -> int:
    return sum(len(v) for v in elements(ns).values())


def ruleset(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset").stdout


@pytest.fixture
def nft(host_ns: Netns) -> tuple[NftablesBackend, NsRunner]:
    runner = NsRunner(host_ns)
    return NftablesBackend(runner), runner


def test_available(nft: tuple[NftablesBackend, NsRunner]) -> None:
    assert nft[0].available()


def test_masquerade_round_trip_is_idempotent(host_ns: Netns, nft: tuple[NftablesBackend,
                                                                         NsRunner]) -> None:
    backend, runner = nft
    a = owner("abc123")
    entries = masq(a, "10.88.0.2/16", "fd00::2/64")
    backend.add_masquerade(entries)
    once = ruleset(host_ns)
    backend.add_masquerade(entries)
    assert ruleset(host_ns) == once  # adding twice is adding once
    assert count(host_ns) == 4
    assert backend.check_masquerade(entries) == []

    backend.remove_masquerade(a, [e.address for e in entries])
    assert count(host_ns) == 0
    missing = backend.check_masquerade(entries)
    assert len(missing) == 4 and all("missing" in m for m in missing)
    backend.remove_masquerade(a, [e.address for e in entries])  # already gone: fine
    backend.remove_masquerade(a, None)


def test_port_mappings_round_trip(host_ns: Netns, nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    a = owner("abc123")
    pms = [mapping(a, "tcp", 8080, "10.88.0.2/16", 80),
           mapping(a, "tcp", 8080, "fd00::2/64", 80),
           mapping(a, "udp", 5353, "10.88.0.2/16", 53, host_ip="127.0.0.1"),
           mapping(a, "sctp", 3868, "fd00::2/64", 3868, host_ip="2001:db8::1")]
    backend.add_portmappings(pms, OPTS)
    once = ruleset(host_ns)
    backend.add_portmappings(pms, OPTS)
    assert ruleset(host_ns) == once
    assert backend.check_portmappings(pms, OPTS) == []
    found = elements(host_ns)
    assert len(found[n.hostport_any_map(4)]) == 1 and len(found[n.hostport_ip_map(6)]) == 1
    assert n.HOSTPORT_LOCALNET_CHAIN in once

    backend.remove_portmappings(a, pms)
    assert count(host_ns) == 0
    assert backend.check_portmappings(pms, OPTS)
    backend.remove_portmappings(a, pms)


def test_check_reads_elements_by_key_and_agrees_with_the_full_listing(
        host_ns: Netns, nft: tuple[NftablesBackend, NsRunner]) -> None:
    """CHECK costs two nft processes (the terse skeleton, then this owner's elements by key),
    and the elements it reads by key are exactly those of the full JSON listing."""
    backend, runner = nft
    a, b = owner("abc123"), owner("other")
    pms = [mapping(a, "tcp", 8080, "10.88.0.2/16", 80),
           mapping(a, "udp", 5353, "fd00::2/64", 53, host_ip="2001:db8::1")]
    backend.add_masquerade(masq(a, "10.88.0.2/16", "fd00::2/64"))
    backend.add_portmappings(pms, OPTS)
    backend.add_portmappings([mapping(b, "tcp", 9090, "10.88.0.3/16", 80)], OPTS)
    listing = Nft(runner).table("inet", "cni_bridge")
    assert listing is not None
    every = listing.all_elements()
    by_key = Nft(runner).lookup(every)
    assert by_key is not None and len(every) > 8
    assert all(by_key.get(e.map, e.key) == e for e in every)

    before = len(runner.calls)
    assert backend.check_portmappings(pms, OPTS) == []
    assert len(runner.calls) - before == 2


def test_two_owners_then_remove_one(host_ns: Netns, nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    a, b = owner("aaa"), owner("bbb")
    ma, mb = masq(a, "10.88.0.2/16"), masq(b, "10.88.0.3/16")
    pa, pb = [mapping(a, "tcp", 8001, "10.88.0.2/16", 80)], [mapping(b, "tcp", 8002,
                                                                      "10.88.0.3/16", 80)]
    backend.add_masquerade(ma + mb)
    backend.add_portmappings(pa, OPTS)
    backend.add_portmappings(pb, OPTS)
    backend.remove_masquerade(a, [ma[0].address])
    backend.remove_portmappings(a, pa)
    assert backend.check_masquerade(mb) == [] and backend.check_portmappings(pb, OPTS) == []
    assert backend.check_masquerade(ma) and backend.check_portmappings(pa, OPTS)


def test_host_port_conflict_names_the_holder(host_ns: Netns,
                                             nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    a, b = owner("holder"), owner("latecomer")
    backend.add_portmappings([mapping(a, "tcp", 8080, "10.88.0.2/16", 80)], OPTS)
    before = ruleset(host_ns)
    wanted = [mapping(b, "tcp", 9090, "10.88.0.3/16", 90),
              mapping(b, "tcp", 8080, "10.88.0.3/16", 80)]
    with pytest.raises(HostPortConflictError) as info:
        backend.add_portmappings(wanted, OPTS)
    assert "*:8080/tcp" in info.value.msg and "container holder (mynet/eth0)" in info.value.msg
    assert ruleset(host_ns) == before  # nothing of the failed ADD was installed
    # Another address or protocol for the same port is not a conflict.
    backend.add_portmappings([mapping(b, "udp", 8080, "10.88.0.3/16", 80),
                              mapping(b, "tcp", 8080, "10.88.0.3/16", 80, "198.51.100.7")], OPTS)


def test_an_owner_never_removes_anothers_element(host_ns: Netns,
                                                  nft: tuple[NftablesBackend, NsRunner]) -> None:
    """ADD A 10.88.0.9, ADD B 10.88.0.9 (A's entry was stale), DEL A: B keeps its entry."""
    backend, _ = nft
    a, b = owner("stale"), owner("fresh")
    backend.add_masquerade(masq(a, "10.88.0.9/16"))
    backend.add_masquerade(masq(b, "10.88.0.9/16"))  # replaces the stale element
    backend.remove_masquerade(a, [masq(a, "10.88.0.9/16")[0].address])
    assert backend.check_masquerade(masq(b, "10.88.0.9/16")) == []
    backend.remove_masquerade(a, None)
    assert backend.check_masquerade(masq(b, "10.88.0.9/16")) == []


def test_remove_by_owner_tag(host_ns: Netns, nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    a, b = owner("a1"), owner("b1")
    backend.add_masquerade(masq(a, "10.88.0.2/16", "fd00::2/64") + masq(b, "10.88.0.3/16"))
    backend.add_portmappings([mapping(a, "tcp", 8080, "10.88.0.2/16", 80),
                              mapping(b, "tcp", 8081, "10.88.0.3/16", 80)], OPTS)
    backend.remove_masquerade(a, None)
    backend.remove_portmappings(a, None)
    assert count(host_ns) == 2 + 4  # b: masquerade owner+via; owner, dnat, hairpin, localhost


def test_gc_keeps_valid_owners_and_other_networks(host_ns: Netns,
                                                  nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    keep, drop, other = owner("keep"), owner("drop"), owner("other", network="net2")
    backend.add_masquerade(masq(keep, "10.88.0.2/16") + masq(drop, "10.88.0.3/16")
                           + masq(other, "10.99.0.2/16"))
    backend.add_portmappings([mapping(drop, "tcp", 8080, "10.88.0.3/16", 80)], OPTS)
    removed = backend.gc_masquerade("mynet", [keep])
    removed += backend.gc_portmappings("mynet", [keep])
    assert len(removed) == 2 + 4 and all("drop" in r for r in removed)
    assert backend.check_masquerade(masq(keep, "10.88.0.2/16")) == []
    assert backend.check_masquerade(masq(other, "10.99.0.2/16")) == []
    assert count(host_ns) == 4
    assert backend.gc_masquerade("mynet", [keep]) == []
    assert "hostport_net4_10.88.0.0/16" not in ruleset(host_ns)  # no container uses it now
    backend.gc_masquerade("mynet", [])
    assert "masq_net4_10.88.0.0/16" not in ruleset(host_ns)
    assert "masq_net4_10.99.0.0/16" in ruleset(host_ns)


REFERENCE_LAYOUT = """
table inet cni_plugins_masquerade {
  chain masq_checks { }
  chain postrouting { type nat hook postrouting priority srcnat; goto masq_checks; }
}
table ip cni_hostport {
  chain hostports { }
  chain hostip_hostports { }
  chain masquerading { type nat hook postrouting priority srcnat; }
}
"""


def test_removal_cleans_the_reference_layouts(host_ns: Netns,
                                              nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    a, b = owner("refctr"), owner("otherctr")
    host_ns.run("nft", "-f", "-", input=REFERENCE_LAYOUT)
    rules = []
    for o, ip in ((a, "10.88.0.2"), (b, "10.88.0.3")):
        rules += [f'add rule inet cni_plugins_masquerade masq_checks ip saddr == {ip} '
                  f'ip daddr != 10.88.0.0/16 masquerade comment "{o.tag}"',
                  f'add rule ip cni_hostport hostports tcp dport 80{ip[-1]} dnat to {ip}:80 '
                  f'comment "{o.container_id}"',
                  f'add rule ip cni_hostport masquerading ip saddr {ip} ip daddr {ip} masquerade '
                  f'comment "{o.container_id}"']
    host_ns.run("nft", "-f", "-", input="\n".join(rules) + "\n")
    backend.remove_masquerade(a, [masq(a, "10.88.0.2/16")[0].address])
    backend.remove_portmappings(a, [mapping(a, "tcp", 802, "10.88.0.2/16", 80)])
    text = ruleset(host_ns)
    assert "refctr" not in text and text.count("otherctr") == 3
    removed = backend.gc_masquerade("mynet", [])
    assert removed == [f"reference nft masquerade rule '{b.tag}'"]


def test_nothing_to_do_means_no_call(nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, runner = nft
    a = owner("idle")
    backend.add_masquerade([])
    backend.add_portmappings([], OPTS)
    backend.remove_masquerade(a, [])
    backend.remove_portmappings(a, [])
    assert runner.calls == []
    backend.add_masquerade(masq(a, "10.88.0.2/16"))
    assert len(runner.writes()) == 1 and len(runner.calls) == 1  # one batch, no read


def test_check_notices_a_flushed_chain(host_ns: Netns,
                                       nft: tuple[NftablesBackend, NsRunner]) -> None:
    backend, _ = nft
    entries = masq(owner("x"), "10.88.0.2/16")
    backend.add_masquerade(entries)
    host_ns.run("nft", "flush", "chain", "inet", n.NFT_TABLE, n.MASQ_CHAIN)
    assert backend.check_masquerade(entries) == [
        f"nft chain inet {n.NFT_TABLE} {n.MASQ_CHAIN} has 0 rules, expected 4"]
    backend.add_masquerade(entries)  # an ADD repairs the skeleton
    assert backend.check_masquerade(entries) == []
    host_ns.run("nft", "delete", "table", "inet", n.NFT_TABLE)
    assert backend.check_masquerade(entries) == [f"nft table inet {n.NFT_TABLE} is missing"]


def test_removal_cleans_iptables_state_of_an_earlier_backend(host_ns: Netns,
                                                            nft: tuple[NftablesBackend,
                                                                       NsRunner]) -> None:
    """A node moved from the (reference) iptables backend: DEL via nftables leaks nothing."""
    _, runner = nft
    backend = make_backend("nftables", runner)  # its removals sweep iptables leftovers
    a = owner("upgraded")
    entries = masq(a, "10.88.0.2/16", "fd00::2/64")
    pms = [mapping(a, "tcp", 8080, "10.88.0.2/16", 80)]
    old = IptablesBackend(runner)
    old.add_masquerade(entries)
    old.add_portmappings(pms, OPTS)
    backend.remove_masquerade(a, [e.address for e in entries])
    backend.remove_portmappings(a, pms)
    assert len(old.check_masquerade(entries)) == 2
    missing = old.check_portmappings(pms, OPTS)
    assert missing[0] == f"IPv4 nat chain {n.dnat_chain_name('mynet', 'upgraded')} is missing"
