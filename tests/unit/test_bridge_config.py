"""The bridge config parser and the pure planners (no root): fields and defaults, MAC precedence,
VLAN trunks, gateway and default-route planning, bridge-address conflicts, port VLANs."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cni_bridge.bridge.addressing import _conflicts
from cni_bridge.bridge.config import BridgeConfig, parse_bridge_config, parse_trunk
from cni_bridge.bridge.plan import plan_l3
from cni_bridge.bridge.undo import Undo
from cni_bridge.bridge.wiring import port_vlans, random_mac
from cni_bridge.cni.dispatch import build_request
from cni_bridge.cni.env import read_env
from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.cni.request import PhaseTimer, Request
from cni_bridge.cni.result import DNS, parse_result
from cni_bridge.net.model import AddressInfo, BridgeVlan


def request(config: dict[str, Any], args: str = "") -> Request:
    environ = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
               "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": args}
    base = {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}
    return build_request(read_env(environ), json.dumps({**base, **config}).encode(),
                         PhaseTimer())


def parse(config: dict[str, Any], args: str = "") -> BridgeConfig:
    return parse_bridge_config(request(config, args))


def test_defaults() -> None:
    cfg = parse({})
    assert cfg == BridgeConfig()
    assert cfg.bridge == "cni0" and not cfg.l3 and cfg.ip_masq_backend is None


def test_is_default_gateway_implies_gateway() -> None:
    cfg = parse({"isDefaultGateway": True, "ipam": {"type": "host-local"}})
    assert cfg.is_gateway and cfg.is_default_gateway and cfg.l3


@pytest.mark.parametrize(("config", "message"), [
    ({"hairpinMode": True, "promiscMode": True}, "hairpin mode and promiscuous mode"),
    ({"disableContainerInterface": True, "ipam": {"type": "host-local"}},
     "cannot use IPAM when DisableContainerInterface flag is set"),
    ({"ipMasqBackend": "pf"}, 'invalid ipMasqBackend value "pf"'),
    ({"vlan": 4095}, "vlan"),
    ({"vlan": -1}, "vlan"),
    ({"bridge": "a/b"}, "invalid bridge name"),
    ({"bridge": "x" * 16}, "invalid bridge name"),
    ({"mtu": "1500"}, "mtu"),
    ({"vlanTrunk": [{"minID": 5}]}, "minID and maxID should be configured simultaneously"),
    ({"vlanTrunk": [{"minID": 9, "maxID": 5}]}, "minID is greater than maxID"),
    ({"vlanTrunk": [{"id": 0}]}, "id"),
    ({"vlanTrunk": [{}]}, "needs id or minID/maxID"),
    ({"vlanTrunk": [5]}, "must be objects"),
    ({"nonMasqueradeCIDRs": "10.244.0.0/16"}, "nonMasqueradeCIDRs must be a JSON list"),
    ({"nonMasqueradeCIDRs": [16]}, "nonMasqueradeCIDRs entries must be CIDR strings"),
    ({"nonMasqueradeCIDRs": ["10.244.0.0/33"]}, "invalid nonMasqueradeCIDRs entry '10.244.0.0/33'"),
    ({"nonMasqueradeCIDRs": ["10.244.1.5/16"]}, "did you mean 10.244.0.0/16?"),
])
def test_invalid_configs(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(config)
    assert message in f"{info.value.msg}: {info.value.details}"


def test_non_masquerade_cidrs_are_parsed_once_and_deduplicated() -> None:
    cfg = parse({"ipMasq": True,
                 "nonMasqueradeCIDRs": ["10.244.0.0/16", "fd00:244::/48", "10.244.0.0/16"]})
    assert cfg.non_masquerade_cidrs == (ipaddress.ip_network("10.244.0.0/16"),
                                        ipaddress.ip_network("fd00:244::/48"))
    assert parse({}).non_masquerade_cidrs == ()


def test_trunk_ranges_merge_and_sort() -> None:
    assert parse_trunk([{"id": 7}, {"minID": 3, "maxID": 5}, {"id": 4}]) == (3, 4, 5, 7)


MACS = {"cni_args": "0a:00:00:00:00:01", "args": "0a:00:00:00:00:02",
        "runtime": "0a:00:00:00:00:03"}


@pytest.mark.parametrize(("sources", "winner"), [
    (("cni_args",), "cni_args"),
    (("cni_args", "args"), "args"),
    (("args", "runtime"), "runtime"),
    (("cni_args", "args", "runtime"), "runtime"),
])
def test_mac_precedence(sources: tuple[str, ...], winner: str) -> None:
    config: dict[str, Any] = {}
    if "args" in sources:
        config["args"] = {"cni": {"mac": MACS["args"]}}
    if "runtime" in sources:
        config["runtimeConfig"] = {"mac": MACS["runtime"]}
    args = f"IgnoreUnknown=1;MAC={MACS['cni_args']}" if "cni_args" in sources else ""
    assert parse(config, args).mac == MACS[winner]


def test_mac_is_normalised_and_validated() -> None:
    assert parse({"runtimeConfig": {"mac": "0A-58-00-00-00-01"}}).mac == "0a:58:00:00:00:01"
    with pytest.raises(ConfigError, match="invalid container MAC"):
        parse({}, "MAC=nonsense")


def test_unknown_cni_args_key_is_an_error_unless_ignored() -> None:
    with pytest.raises(CniError):
        parse({}, "FOO=bar")
    assert parse({}, "IgnoreUnknown=1;FOO=bar").mac == ""


def test_dns() -> None:
    cfg = parse({"dns": {"nameservers": ["192.0.2.53"]}})
    assert cfg.dns == DNS(nameservers=("192.0.2.53",)) and not cfg.dns.is_empty()
    assert parse({}).dns.is_empty()


# --- L3 planning ---------------------------------------------------------------------------------


def ipam_result(ips: list[dict[str, Any]], routes: list[dict[str, Any]] | None = None) -> Any:
    return parse_result({"cniVersion": "1.0.0", "ips": ips, "routes": routes or []}, "1.0.0")


def test_plan_computes_missing_gateways_and_default_routes() -> None:
    cfg = parse({"isDefaultGateway": True, "ipam": {"type": "x"}})
    plan = plan_l3(cfg, ipam_result([{"address": "10.1.2.7/16"}, {"address": "fd00::7/64"}]))
    assert [str(ip.gateway) for ip in plan.ips] == ["10.1.0.1", "fd00::1"]
    assert {ip.interface for ip in plan.ips} == {2}
    assert [(str(r.dst), str(r.gw)) for r in plan.routes] == [("0.0.0.0/0", "10.1.0.1"),
                                                               ("::/0", "fd00::1")]
    assert [str(a) for a in plan.bridge_addresses] == ["10.1.0.1/16", "fd00::1/64"]
    assert plan.forwarding_families == (4, 6)


def test_plan_keeps_an_ipam_default_route_with_a_gateway() -> None:
    cfg = parse({"isDefaultGateway": True, "ipam": {"type": "x"}})
    routes = [{"dst": "0.0.0.0/0", "gw": "10.1.0.254"}]
    plan = plan_l3(cfg, ipam_result([{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}], routes))
    assert [(str(r.dst), str(r.gw)) for r in plan.routes] == [("0.0.0.0/0", "10.1.0.254")]


def test_plan_without_gateway_flag() -> None:
    cfg = parse({"ipam": {"type": "x"}})
    plan = plan_l3(cfg, ipam_result([{"address": "10.1.0.5/24"}]))
    assert plan.ips[0].gateway is None
    assert plan.bridge_addresses == () and plan.forwarding_families == () and plan.routes == ()


def test_plan_needs_an_address() -> None:
    with pytest.raises(CniError, match="IPAM plugin returned missing IP config"):
        plan_l3(parse({"ipam": {"type": "x"}}), ipam_result([]))


def address(text: str) -> AddressInfo:
    return AddressInfo(index=3, interface=ipaddress.ip_interface(text), scope=0, flags=0)


def test_bridge_address_conflicts() -> None:
    wanted4 = ipaddress.ip_interface("10.1.0.1/24")
    assert _conflicts(wanted4, [address("10.1.0.1/24")]) == []
    assert _conflicts(wanted4, [address("10.9.0.1/24")]) == [address("10.9.0.1/24")]
    wanted6 = ipaddress.ip_interface("fd00:1::1/64")
    existing = [address("fd00:2::1/64"), address("fe80::1/64"), address("fd00:1::9/64"),
                address("10.9.0.1/24")]
    assert _conflicts(wanted6, existing) == [address("fd00:1::9/64")]


def test_port_vlans() -> None:
    assert port_vlans(parse({})) == []
    assert port_vlans(parse({"vlan": 100})) == [BridgeVlan(100, pvid=True, untagged=True)]
    assert port_vlans(parse({"vlanTrunk": [{"id": 5}]})) == [
        BridgeVlan(1, pvid=True, untagged=True), BridgeVlan(5)]
    assert port_vlans(parse({"vlan": 5, "vlanTrunk": [{"minID": 5, "maxID": 6}]})) == [
        BridgeVlan(5, pvid=True, untagged=True), BridgeVlan(6)]


def test_random_mac_is_unicast_and_local() -> None:
    for _ in range(50):
        first = int(random_mac().split(":")[0], 16)
        assert first & 0x01 == 0 and first & 0x02 == 0x02


def test_undo_runs_in_reverse_and_past_failures() -> None:
    done: list[str] = []

    def boom() -> None:
        raise CniError("cannot")

    undo = Undo()
    undo.push("first", lambda: done.append("first"))
    undo.push("failing", boom)
    undo.push("last", lambda: done.append("last"))
    undo.run()
    assert done == ["last", "first"]
    undo.run()  # emptied: nothing runs twice
    assert done == ["last", "first"]


def test_vlan_gateway_name_must_fit() -> None:
    from cni_bridge.bridge.wiring import gateway_link_name

    assert gateway_link_name(parse({"bridge": "br0", "vlan": 100})) == "br0.100"
    with pytest.raises(ConfigError, match="longer than 15 bytes"):
        gateway_link_name(parse({"bridge": "bridge-name-12", "vlan": 100}))
