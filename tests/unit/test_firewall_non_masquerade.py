"""``nonMasqueradeCIDRs``: the bridge's list of destinations that ipMasq leaves alone (pod
CIDRs of other nodes), planned for both firewall backends (no root)."""

from __future__ import annotations

import ipaddress

from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables.save import NatState, parse_save
from cni_bridge.firewall.model import MasqEntry, Owner
from cni_bridge.firewall.nft import plan as nft_plan
from cni_bridge.firewall.nft import schema as nft_schema
from cni_bridge.firewall.nft.state import Chain, Listing

A = Owner("mynet", "abc123", "eth0")
POD4 = ipaddress.ip_interface("10.244.1.5/24")
POD6 = ipaddress.ip_interface("fd00:244:1::5/64")
CLUSTER = (ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:244::/48"),
           ipaddress.ip_network("10.96.0.0/12"))
CHAIN = "CNI-70a29d9dc18bc4d652ea5d59"  # the reference's name for (mynet, abc123)
COMMENT = '-m comment --comment "name: \\"mynet\\" id: \\"abc123\\""'


def saved(lines: list[str]) -> NatState:
    """The nat table after `lines` (``-A`` only) were applied to an empty one."""
    return parse_save(f"*nat\n:POSTROUTING ACCEPT [0:0]\n:{CHAIN} - [0:0]\n"
                      + "".join(f"{ln}\n" for ln in lines) + "COMMIT\n")


def test_entry_keeps_the_networks_of_its_own_family_once() -> None:
    v4 = MasqEntry.of(A, POD4, (*CLUSTER, CLUSTER[0]))
    v6 = MasqEntry.of(A, POD6, CLUSTER)
    assert v4.non_masquerade == (CLUSTER[0], CLUSTER[2])
    assert v6.non_masquerade == (CLUSTER[1],)
    assert MasqEntry.of(A, POD4).non_masquerade == ()


def test_nft_subnet_chain_returns_before_it_masquerades() -> None:
    chain = nft_schema.entry_masq_chain(MasqEntry.of(A, POD4, CLUSTER))
    assert chain.name == "masq_net4_10.244.1.0/24"
    assert chain.rules == ("ip daddr 10.244.0.0/16 return", "ip daddr 10.96.0.0/12 return",
                           "ip daddr != 10.244.1.0/24 masquerade")
    v6 = nft_schema.entry_masq_chain(MasqEntry.of(A, POD6, CLUSTER))
    assert v6.rules == ("ip6 daddr fd00:244::/48 return",
                        "ip6 daddr != fd00:244:1::/64 masquerade")


def test_nft_without_the_field_is_unchanged() -> None:
    """A node without the field keeps exactly the layout it had (same chain, one rule)."""
    chain = nft_schema.entry_masq_chain(MasqEntry.of(A, POD4))
    assert chain == nft_schema.masq_net_chain(POD4.network)
    assert chain.rules == ("ip daddr != 10.244.1.0/24 masquerade",)


def test_nft_skeleton_writes_the_chain_before_the_element_jumping_to_it() -> None:
    entry = MasqEntry.of(A, POD4, CLUSTER[:1])
    lines = nft_schema.masq_table_lines([entry]) + nft_plan.plan_add(nft_plan.masq_elements(entry))
    rule = "add rule inet cni_bridge masq_net4_10.244.1.0/24 ip daddr 10.244.0.0/16 return"
    via = next(i for i, ln in enumerate(lines) if "masq_via4" in ln and "element" in ln)
    assert lines.index(rule) < via
    assert "goto masq_net4_10.244.1.0/24" in lines[via]  # the element's value does not change


def test_nft_check_counts_the_exclusion_rules() -> None:
    """CHECK notices a subnet chain written without (or with other) exclusions."""
    name = "masq_net4_10.244.1.0/24"
    listing = Listing(chains={name: Chain(name, None, 1)})
    chains = [nft_schema.entry_masq_chain(MasqEntry.of(A, POD4, CLUSTER[:1]))]
    assert nft_plan.check_outline(listing, chains, []) == [
        "nft chain inet cni_bridge masq_net4_10.244.1.0/24 has 1 rules, expected 2"]


def test_iptables_chain_accepts_the_networks_between_subnet_and_masquerade() -> None:
    entry = MasqEntry.of(A, POD4, CLUSTER)
    assert ipt_masq.chain_rules(entry) == [
        f"-d 10.244.1.0/24 {COMMENT} -j ACCEPT",
        f"-d 10.244.0.0/16 {COMMENT} -j ACCEPT",
        f"-d 10.96.0.0/12 {COMMENT} -j ACCEPT",
        f"! -d 224.0.0.0/4 {COMMENT} -j MASQUERADE"]
    lines = ipt_masq.plan_add_masquerade(NatState(), [entry]).lines
    assert lines == [f"-A {CHAIN} {r}" for r in ipt_masq.chain_rules(entry)] + [
        f"-A POSTROUTING -s 10.244.1.5/32 {COMMENT} -j {CHAIN}"]


def test_iptables_without_the_field_is_the_reference_layout() -> None:
    """Byte-compatible with the reference: the two rules it writes, nothing else."""
    assert ipt_masq.chain_rules(MasqEntry.of(A, POD4)) == [
        f"-d 10.244.1.0/24 {COMMENT} -j ACCEPT", f"! -d 224.0.0.0/4 {COMMENT} -j MASQUERADE"]


def test_iptables_missing_accept_goes_above_an_existing_masquerade() -> None:
    """A chain the reference (or an ADD without the field) wrote gets the exclusion at its
    top: appended after MASQUERADE it would never match."""
    plain = MasqEntry.of(A, POD4)
    state = saved(ipt_masq.plan_add_masquerade(NatState(), [plain]).lines)
    entry = MasqEntry.of(A, POD4, CLUSTER[:1])
    assert ipt_masq.check_masquerade(state, [entry]) == [
        f"nat rule '-A {CHAIN} -d 10.244.0.0/16 {COMMENT} -j ACCEPT' is missing"]
    assert ipt_masq.plan_add_masquerade(state, [entry]).lines == [
        f"-I {CHAIN} 1 -d 10.244.0.0/16 {COMMENT} -j ACCEPT"]


def test_iptables_removal_takes_the_extra_rules_with_the_chain() -> None:
    """DEL (ours or the reference's) deletes the jump, then flushes and deletes the chain."""
    entry = MasqEntry.of(A, POD4, CLUSTER)
    state = saved(ipt_masq.plan_add_masquerade(NatState(), [entry]).lines)
    assert ipt_masq.plan_remove_masquerade(state, A, [POD4]).lines == [
        f"-D POSTROUTING -s 10.244.1.5/32 {COMMENT} -j {CHAIN}", f"-F {CHAIN}", f"-X {CHAIN}"]
