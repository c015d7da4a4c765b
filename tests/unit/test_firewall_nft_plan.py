"""nftables planning from a table listing captured from a real kernel (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.firewall import names as n
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.nft import plan as nft_plan
from cni_bridge.firewall.nft.state import (
    Element,
    Listing,
    canonical,
    parse_get_elements,
    parse_listing,
)

LISTINGS = Path(__file__).resolve().parents[1] / "data" / "firewall" / "listings"
# What tests/data/firewall/listings/our-table.json holds (see the owners below).
A = Owner("mynet", "abc123", "eth0")
B = Owner("mynet", "def456", "eth0")
C = Owner("other", "abc123", "eth1")
V4A = ipaddress.ip_interface("10.88.0.2/16")


@pytest.fixture(scope="module")
def listing() -> Listing:
    return parse_listing((LISTINGS / "our-table.json").read_text())


def test_listing_is_normalised_to_the_planners_form(listing: Listing) -> None:
    assert listing.get(n.masq_owner_map(4), ("10.88.0.2",)) == Element(
        n.masq_owner_map(4), ("10.88.0.2",), (str(A.id),), A.tag)
    via = listing.get(n.masq_via_map(4), ("10.88.0.2",))
    assert via is not None and via.value == ("goto masq_net4_10.88.0.0/16",)
    assert listing.get(n.hostport_ip_map(6), ("2001:db8::1", "sctp", "3868")) is not None
    element = listing.get(n.hostport_any_map(4), ("tcp", "9090"))
    assert element is not None and element.value == ("10.88.0.3", "90")
    assert listing.chains[n.MASQ_CHAIN].rule_count == 4
    assert listing.chains["masq_net4_10.88.0.0/16"].rule_count == 1
    assert listing.chains[n.HOSTPORT_PREROUTING_CHAIN].hook == "prerouting"


def test_canonical_forms() -> None:
    assert canonical("addr", "FD00:0::2") == "fd00::2"
    assert canonical("owner", 7) == canonical("owner", "0x00000007") == "7"
    assert canonical("verdict", {"goto": {"target": "masq_net4_x"}}) == "goto masq_net4_x"
    with pytest.raises(CniError, match="cannot parse"):
        parse_listing("not json")


def test_what_was_added_checks_clean(listing: Listing) -> None:
    planned = [p for e in [MasqEntry.of(A, V4A)] for p in nft_plan.masq_elements(e)]
    planned += nft_plan.portmap_elements([PortMapping(A, "tcp", 8080, V4A, 80)], PortmapOptions())
    assert nft_plan.check_elements(listing, planned) == []


def test_resolve_add_is_idempotent_for_the_same_owner(listing: Listing) -> None:
    planned = nft_plan.portmap_elements([PortMapping(A, "tcp", 8080, V4A, 80)], PortmapOptions())
    assert nft_plan.resolve_add(listing, planned) == ([], [], [])


def test_resolve_add_reports_a_host_port_conflict_by_owner(listing: Listing) -> None:
    new = Owner("mynet", "late", "eth0")
    ip = ipaddress.ip_interface("10.88.0.9/16")
    planned = nft_plan.portmap_elements([PortMapping(new, "tcp", 8080, ip, 80),
                                         PortMapping(new, "tcp", 8081, ip, 80)], PortmapOptions())
    lines, conflicts, _ = nft_plan.resolve_add(listing, planned)
    error = nft_plan.conflict_error(conflicts)
    assert error.msg == "host port *:8080/tcp is already published by container abc123 (mynet/eth0)"
    assert error.code == 110 and error.holders == [("*:8080/tcp", "container abc123 (mynet/eth0)")]
    assert any("tcp . 8081" in line for line in lines)


def test_resolve_add_replaces_a_stale_address(listing: Listing) -> None:
    new = Owner("mynet", "reused", "eth0")
    lines, conflicts, replaced = nft_plan.resolve_add(
        listing, nft_plan.masq_elements(MasqEntry.of(new, V4A)))
    assert conflicts == [] and {el.comment for el in replaced} == {A.tag}
    assert lines[0] == f"delete element inet cni_bridge {n.masq_owner_map(4)} {{ 10.88.0.2 }}"
    assert new.tag in lines[1]


def test_owned_elements_and_gc(listing: Listing) -> None:
    maps = {m for m in listing.elements}
    mine = nft_plan.owned_elements(listing, A, maps)
    assert mine and all(el.comment == A.tag for el in mine)
    only = nft_plan.owned_elements(listing, A, maps, {(n.masq_owner_map(4), ("10.88.0.2",))})
    assert [el.key for el in only] == [("10.88.0.2",)]
    doomed = nft_plan.gc_elements(listing, "mynet", [A], maps)
    assert doomed and {el.comment for el in doomed} == {B.tag}  # C is another network
    assert nft_plan.gc_elements(listing, "other", [C], maps) == []


def test_tolerant_delete_re_adds_with_the_owner_id() -> None:
    el = nft_plan.masq_elements(MasqEntry.of(A, V4A))[0].element
    assert nft_plan.plan_tolerant_delete([el]) == [
        f"add element inet cni_bridge masq_owner4 {{ 10.88.0.2 : {A.id:#010x} }}",
        "delete element inet cni_bridge masq_owner4 { 10.88.0.2 }"]


def test_unused_subnet_chains_are_found(listing: Listing) -> None:
    assert nft_plan.unused_subnet_chains(listing, []) == []
    doomed = nft_plan.owned_elements(listing, C, set(listing.elements))
    assert nft_plan.unused_subnet_chains(listing, doomed) == [
        "delete chain inet cni_bridge masq_net4_10.99.0.0/24"]


def test_masq_all_and_no_snat_choose_the_masquerade_maps() -> None:
    pms = [PortMapping(A, "tcp", 80, V4A, 80)]

    def maps(opts: PortmapOptions) -> list[str]:
        return sorted(p.element.map for p in nft_plan.portmap_elements(pms, opts))

    assert maps(PortmapOptions()) == ["hostport_any4", "hostport_lo4", "hostport_owner4",
                                      "hostport_via4"]
    assert maps(PortmapOptions(masq_all=True)) == ["hostport_all4", "hostport_any4",
                                                   "hostport_owner4"]
    assert maps(PortmapOptions(snat=False)) == ["hostport_any4", "hostport_owner4"]


def test_get_element_text_reads_back_every_element(listing: Listing) -> None:
    """`nft get element` prints text; each element of the recorded listing, printed in that
    shape, parses back equal (marks in hex, concatenations, verdicts, IPv6, comments)."""
    blocks = [f"table inet cni_bridge {{\n\tmap {e.map} {{\n\t\ttype x : y\n"
              f"\t\telements = {{ {nft_plan.render_element(e)} }}\n\t}}\n}}\n"
              for e in listing.all_elements()]
    parsed = parse_get_elements("".join(blocks))
    assert len(listing.all_elements()) > 5
    assert all(parsed.get(e.map, e.key) == e for e in listing.all_elements())
    with pytest.raises(CniError, match="unexpected"):
        parse_get_elements("\tmap masq_owner4 {\n\t\telements = { garbage }\n")
