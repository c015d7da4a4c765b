"""iptables planners against state saved from the reference plugins (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.save import NatState, parse_save, signature
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping

LISTINGS = Path(__file__).resolve().parents[1] / "data" / "firewall" / "listings"
A, B = Owner("mynet", "abc123", "eth0"), Owner("mynet", "def456", "eth0")
OPTS = PortmapOptions()


@pytest.fixture
def v4() -> NatState:
    return parse_save((LISTINGS / "reference-two-containers.v4.save").read_text())


@pytest.fixture
def v6() -> NatState:
    return parse_save((LISTINGS / "reference-two-containers.v6.save").read_text())


def entries_a() -> tuple[list[MasqEntry], list[PortMapping]]:
    ip = ipaddress.ip_interface("10.88.0.2/16")
    return [MasqEntry.of(A, ip)], [
        PortMapping(A, "tcp", 8080, ip, 80),
        PortMapping(A, "udp", 5302, ip, 53, ipaddress.ip_address("127.0.0.1"))]


def test_parse_save_keeps_rules_in_order(v4: NatState) -> None:
    assert v4.rules("POSTROUTING")[0].endswith("-j CNI-HOSTPORT-MASQ")
    assert len(v4.rules("CNI-HOSTPORT-DNAT")) == 4
    assert v4.has_chain("CNI-HOSTPORT-SETMARK") and not v4.has_chain("FOO")
    with pytest.raises(CniError, match="cannot parse"):
        parse_save("*nat\n:X - [0:0]\ngarbage\nCOMMIT\n")


def test_signature_ignores_order_and_implicit_parts() -> None:
    assert signature("-s 10.0.0.2 -j X") == signature("-j X --source 10.0.0.2/32")
    assert signature("-p tcp --dport 80 -j X") == signature("-p tcp -m tcp --dport 80 -j X")
    assert signature("! -d 224.0.0.0/4 -j M") != signature("-d 224.0.0.0/4 -j M")
    quoted = signature('-m comment --comment "a b" -j X')
    assert quoted == signature("-m comment --comment 'a b' -j X")


def test_what_the_reference_added_is_already_complete(v4: NatState) -> None:
    masq, pms = entries_a()
    assert not ipt_masq.plan_add_masquerade(v4, masq)
    assert not ipt_portmap.plan_add_portmappings(v4, A, pms, 4, OPTS)
    assert ipt_masq.check_masquerade(v4, masq) == []
    assert ipt_portmap.check_portmappings(v4, A, pms, 4, OPTS) == []


def test_remove_deletes_exactly_the_owners_rules(v4: NatState) -> None:
    text = ipt_masq.plan_remove_masquerade(v4, A, None).render()
    text += ipt_portmap.plan_remove_portmappings(v4, A).render()
    assert "def456" not in text and "CNI-bef14ab3e324a4b0c1f0a" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("-")]
    dnat = ('-D CNI-HOSTPORT-DNAT -p {} -m comment --comment '
            '"dnat name: \\"mynet\\" id: \\"abc123\\"" ')
    assert lines == [
        '-D POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \\"mynet\\" id: \\"abc123\\"" '
        "-j CNI-70a29d9dc18bc4d652ea5d59",
        "-F CNI-70a29d9dc18bc4d652ea5d59", "-X CNI-70a29d9dc18bc4d652ea5d59",
        dnat.format("tcp") + "-m multiport --dports 8080 -j CNI-DN-70a29d9dc18bc4d652ea5",
        dnat.format("udp") + "-m multiport --dports 5302 -j CNI-DN-70a29d9dc18bc4d652ea5",
        "-F CNI-DN-70a29d9dc18bc4d652ea5", "-X CNI-DN-70a29d9dc18bc4d652ea5"]


def test_remove_of_missing_state_plans_nothing() -> None:
    assert not ipt_masq.plan_remove_masquerade(NatState(), A, None)
    assert not ipt_portmap.plan_remove_portmappings(NatState(), A)


def test_remove_by_address_keeps_a_chain_still_in_use(v4: NatState) -> None:
    extra = ipt_masq.plan_add_masquerade(
        v4, [MasqEntry.of(A, ipaddress.ip_interface("10.88.0.9/16"))])
    assert extra.lines == ['-A POSTROUTING -s 10.88.0.9/32 -m comment --comment '
                           '"name: \\"mynet\\" id: \\"abc123\\"" -j CNI-70a29d9dc18bc4d652ea5d59']
    script = ipt_masq.plan_remove_masquerade(v4, A, [ipaddress.ip_interface("10.88.0.9/16")])
    assert not script  # that jump does not exist; the chain still has 10.88.0.2's jump


def test_check_reports_each_missing_rule(v6: NatState) -> None:
    masq = [MasqEntry.of(A, ipaddress.ip_interface("fd00::2/64"))]
    chain = "CNI-70a29d9dc18bc4d652ea5d59"
    damaged = NatState({**v6.chains, chain: v6.rules(chain)[:1]})
    assert ipt_masq.check_masquerade(damaged, masq) == [
        f"nat rule '-A {chain} ! -d ff00::/8 -m comment --comment "
        f"\"name: \\\"mynet\\\" id: \\\"abc123\\\"\" -j MASQUERADE' is missing"]
    gone = NatState({c: r for c, r in v6.chains.items() if c != chain})
    assert ipt_masq.check_masquerade(gone, masq) == [
        f"nat chain {chain} of container abc123 (mynet/eth0) is missing"]


def test_gc_removes_only_invalid_owners_of_the_network(v4: NatState) -> None:
    script, removed = ipt_masq.plan_gc_masquerade(v4, "mynet", [A])
    assert removed == ["masquerade chain CNI-bef14ab3e324a4b0c1f0a295 of container def456"]
    assert "abc123" not in script.render()
    script, removed = ipt_portmap.plan_gc_portmappings(v4, "mynet", [A])
    assert removed == ["port-mapping chain CNI-DN-bef14ab3e324a4b0c1f0a of container def456"]
    assert ipt_masq.plan_gc_masquerade(v4, "othernet", [])[1] == []


def test_conflicting_host_port_is_found_with_its_holder(v4: NatState) -> None:
    ip = ipaddress.ip_interface("10.88.0.7/16")
    new = Owner("mynet", "new", "eth0")
    wanted = [PortMapping(new, "tcp", 9090, ip, 80), PortMapping(new, "tcp", 9091, ip, 80),
              PortMapping(new, "udp", 5304, ip, 53, ipaddress.ip_address("127.0.0.1"))]
    assert ipt_portmap.find_conflicts(v4, new, wanted) == [
        ("*:9090/tcp", "container def456 (mynet)"),
        ("127.0.0.1:5304/udp", "container def456 (mynet)")]
    assert ipt_portmap.find_conflicts(v4, B, wanted) == []  # its own chain is no conflict


def test_entry_rules_split_at_15_ports_and_sort_protocols() -> None:
    ip = ipaddress.ip_interface("10.0.0.2/24")
    pms = [PortMapping(A, "udp", 1, ip, 1)] + [PortMapping(A, "tcp", p, ip, p)
                                              for p in range(100, 117)]
    rules = ipt_portmap.entry_rules(A, pms, 4, OPTS)
    assert [r.split(" -m multiport --dports ")[1].split()[0] for r in rules] == [
        ",".join(str(p) for p in range(100, 115)), "115,116", "1"]
