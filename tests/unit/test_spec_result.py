"""Result parsing and version conversion, checked against golden files.

Each directory under tests/data/results is one case: ``input.json`` (a result in any version;
``meta.json`` gives ``{"version": ...}`` when the input has no cniVersion) and, for every
supported version, either ``expected-<version>.json`` (the exact text libcni prints: 4-space
indent, no trailing newline) or ``expected-<version>.error`` (the conversion error message).
Adding a case means adding a directory; the expected files come from libcni's own code
(see tests/data/results/README.md), never from the code under test.
"""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import (
    DNS,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_result,
    parse_route,
    render_result,
)

ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DATA = Path(__file__).resolve().parent.parent / "data" / "results"
CASES = sorted(p for p in DATA.iterdir() if p.is_dir() and not p.name.startswith("_"))


def load_case(case: Path) -> Result:
    obj = json.loads((case / "input.json").read_text(encoding="utf-8"))
    meta = case / "meta.json"
    version = json.loads(meta.read_text())["version"] if meta.exists() else obj["cniVersion"]
    return parse_result(obj, version)


def test_there_are_enough_cases_and_each_covers_every_version() -> None:
    assert len(CASES) >= 6
    for case in CASES:
        for version in ALL_VERSIONS:
            files = [case / f"expected-{version}.json", case / f"expected-{version}.error"]
            assert sum(f.exists() for f in files) == 1, f"{case.name} {version}"


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_conversion(case: Path, version: str) -> None:
    result = load_case(case)
    error_file = case / f"expected-{version}.error"
    if error_file.exists():
        with pytest.raises(CniError) as info:
            render_result(result, version)
        assert info.value.msg == error_file.read_text().strip()
        return
    expected = (case / f"expected-{version}.json").read_text(encoding="utf-8")
    assert render_result(result, version) == expected


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_output_reparses_to_itself(case: Path, version: str) -> None:
    path = case / f"expected-{version}.json"
    if not path.exists():
        pytest.skip("conversion error case")
    text = path.read_text(encoding="utf-8")
    assert render_result(parse_result(json.loads(text), version), version) == text


# ------------------------------------------------------------------ specific rules

def test_result_without_version_takes_the_given_one() -> None:
    assert parse_result({"ips": []}, "0.3.1").cni_version == "0.3.1"


def test_zero_int_fields_are_absent_like_go_omitempty() -> None:
    r = parse_result(
        {"interfaces": [{"name": "e", "mtu": 0}],
         "routes": [{"dst": "10.0.0.0/8", "mtu": 0, "advmss": 0, "priority": 0,
                     "table": 0, "scope": 0}]},
        "1.1.0",
    )
    assert r.interfaces[0].mtu is None
    assert r.routes[0] == Route(ip_network("10.0.0.0/8"), table=0, scope=0)
    doc = json.loads(render_result(r, "1.1.0"))
    assert doc["routes"] == [{"dst": "10.0.0.0/8", "scope": 0, "table": 0}]
    assert doc["interfaces"] == [{"name": "e"}]


def test_v11_interface_fields_in_a_0_4_0_result_are_dropped_like_libcni() -> None:
    r = parse_result({"interfaces": [{"name": "e", "mtu": 1500, "pciID": "x"}]}, "0.4.0")
    assert r.interfaces == (Interface("e"),)


def test_v11_fields_survive_at_1_0_0() -> None:
    r = Result(interfaces=(Interface("e", mtu=9000, socket_path="/s", pci_id="p"),),
               routes=(Route(ip_network("::/0"), priority=5),))
    doc = json.loads(render_result(r, "1.0.0"))
    assert doc["interfaces"] == [{"mtu": 9000, "name": "e", "pciID": "p", "socketPath": "/s"}]
    assert doc["routes"] == [{"dst": "::/0", "priority": 5}]


def test_legacy_uses_first_ip_of_each_family_and_routes_by_family() -> None:
    r = Result(
        ips=(IPConfig(ip_interface("fd00::2/64")), IPConfig(ip_interface("10.0.0.2/24")),
             IPConfig(ip_interface("10.0.0.3/24"), ip_address("10.0.0.1"))),
        routes=(Route(ip_network("::/0"), mtu=1400), Route(ip_network("0.0.0.0/0"), table=5)),
    )
    doc = json.loads(render_result(r, "0.2.0"))
    assert doc == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0"}]},
        "dns": {},
    }


def test_legacy_routes_of_a_family_without_ip_are_lost() -> None:
    r = Result(ips=(IPConfig(ip_interface("10.0.0.2/24")),), routes=(Route(ip_network("::/0")),))
    assert "routes" not in json.loads(render_result(r, "0.1.0"))["ip4"]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_no_ip_cannot_become_legacy(version: str) -> None:
    with pytest.raises(CniError) as info:
        render_result(Result(interfaces=(Interface("eth0"),)), version)
    assert info.value.msg == "cannot convert: no valid IP addresses"


@pytest.mark.parametrize(
    "obj",
    [
        {"cniVersion": "2.0.0"},
        {"ips": [{"address": "10.0.0.1"}]},
        {"ips": [{"address": "nope/8"}]},
        {"ips": [{"address": 5}]},
        {"ips": [{"address": "10.0.0.1/8", "gateway": "x"}]},
        {"ips": [{"address": "10.0.0.1/8", "interface": True}]},
        {"ips": [{"address": "10.0.0.1/8", "interface": "1"}]},
        {"ips": {"address": "10.0.0.1/8"}},
        {"interfaces": ["eth0"]},
        {"interfaces": [{"name": 5}]},
        {"routes": [{"gw": "10.0.0.1"}]},
        {"routes": [{"dst": "10.0.0.0/8", "mtu": "1500"}]},
        {"dns": {"nameservers": "10.0.0.1"}},
        {"dns": {"search": [None]}},
        {"dns": []},
        {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.1"}},
        {"cniVersion": "0.2.0", "ip4": []},
    ],
)
def test_malformed_results_are_decode_errors(obj: dict[str, Any]) -> None:
    with pytest.raises(CniError) as info:
        parse_result(obj, "1.1.0")
    assert info.value.code == 6


def test_parse_route_keeps_network_of_a_host_address() -> None:
    assert parse_route({"dst": "10.1.2.3/8"}).dst == ip_network("10.0.0.0/8")


# ------------------------------------------------------------------ round trip at 1.1.0

names = st.text(min_size=0, max_size=12)
opt_pos = st.one_of(st.none(), st.integers(min_value=1, max_value=2**31 - 1))
opt_nonneg = st.one_of(st.none(), st.integers(min_value=0, max_value=255))
v4 = st.integers(min_value=0, max_value=2**32 - 1)
v6 = st.integers(min_value=0, max_value=2**128 - 1)
addresses = st.one_of(
    st.tuples(v4, st.integers(0, 32)).map(lambda t: ip_interface((t[0], t[1]))),
    st.tuples(v6, st.integers(0, 128)).map(lambda t: ip_interface((t[0], t[1]))),
)
gateways = st.one_of(st.none(), v4.map(ip_address), v6.map(lambda n: ip_address(n.to_bytes(16))))
networks = addresses.map(lambda a: a.network)

interfaces = st.builds(Interface, name=names, mac=names, sandbox=names, mtu=opt_pos,
                       socket_path=names, pci_id=names)
ip_configs = st.builds(IPConfig, address=addresses, gateway=gateways,
                       interface=st.one_of(st.none(), st.integers(0, 8)))
routes = st.builds(Route, dst=networks, gw=gateways, mtu=opt_pos, advmss=opt_pos,
                   priority=opt_pos, table=opt_nonneg, scope=opt_nonneg)
string_tuples = st.lists(names, max_size=3).map(tuple)
dnses = st.builds(DNS, nameservers=string_tuples, domain=names, search=string_tuples,
                  options=string_tuples)
results = st.builds(
    Result,
    cni_version=st.just("1.1.0"),
    interfaces=st.lists(interfaces, max_size=3).map(tuple),
    ips=st.lists(ip_configs, max_size=3).map(tuple),
    routes=st.lists(routes, max_size=3).map(tuple),
    dns=dnses,
)


@settings(max_examples=100, deadline=None)
@given(results)
def test_round_trip_at_1_1_0(result: Result) -> None:
    assert parse_result(json.loads(render_result(result, "1.1.0")), "1.1.0") == result


@settings(max_examples=50, deadline=None)
@given(results, st.sampled_from(ALL_VERSIONS))
def test_every_version_renders_valid_json_or_the_legacy_error(result: Result, version: str) -> None:
    try:
        text = render_result(result, version)
    except CniError as exc:
        assert version in ("0.1.0", "0.2.0") and not result.ips
        assert exc.msg == "cannot convert: no valid IP addresses"
        return
    assert not text.endswith("\n")
    doc = json.loads(text)
    assert doc["cniVersion"] == version
    assert parse_result(doc, version).cni_version == version
