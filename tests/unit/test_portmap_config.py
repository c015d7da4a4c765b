"""portmap config parsing, container address selection and entry planning (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from typing import Any

import pytest

from cni_bridge.cni.errors import ConfigError
from cni_bridge.cni.result import Interface, IPConfig, Result, parse_result
from cni_bridge.firewall import model as fw_model
from cni_bridge.firewall import names as fw_names
from cni_bridge.firewall.model import Owner
from cni_bridge.portmap import config as pm
from cni_bridge.portmap.ops import plan_entries, to_options


def parse(config: dict[str, Any], mappings: list[Any] | None = None) -> pm.PortmapConfig:
    runtime = {} if mappings is None else {"portMappings": mappings}
    return pm.parse_config(config, runtime)


def error(config: dict[str, Any], mappings: list[Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as failure:
        parse(config, mappings)
    return failure.value


def test_constants_match_the_firewall_layer() -> None:
    """Duplicated so that calls without mappings never import the firewall package."""
    assert pm.PROTOCOLS == fw_model.PROTOCOLS
    assert pm.DEFAULT_MARK_MASQ_BIT == fw_names.DEFAULT_MARK_MASQ_BIT
    # to_options hands the parsed options over field by field.
    assert [f.name for f in fields(pm.Options)] == [f.name for f in fields(fw_model.PortmapOptions)]


def test_defaults_are_the_reference_ones() -> None:
    cfg = parse({})
    assert cfg.mappings == ()
    assert cfg.options == pm.Options(snat=True, masq_all=False, mark_masq_bit=13)
    assert cfg.backend is None and cfg.wanted_backend is None
    opts = to_options(cfg.options)
    assert opts.mark == "0x2000/0x2000" and opts.snat and not opts.masq_all


def test_mappings_are_parsed() -> None:
    cfg = parse({}, [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "192.0.2.1"},
        {"hostPort": 9000, "containerPort": 9000},
        {"hostPort": 7, "containerPort": 7, "protocol": "sctp", "hostIP": ""},
    ])
    assert cfg.mappings == (
        pm.MappingSpec(8080, 80, "tcp"),
        pm.MappingSpec(53, 53, "udp", ipaddress.ip_address("192.0.2.1")),
        pm.MappingSpec(9000, 9000, "tcp"),
        pm.MappingSpec(7, 7, "sctp"),
    )


def test_mapping_keys_match_regardless_of_case_as_in_go() -> None:
    """containerd's CRI sends go-cni's struct without JSON tags: ``HostPort`` etc. The
    reference (Go's encoding/json) matches keys case-insensitively, the last match winning."""
    cfg = parse({}, [
        {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
        {"hostport": 53, "CONTAINERPORT": 53, "protocol": "udp", "hostIp": "192.0.2.1"},
        {"hostPort": 1, "HostPort": 9000, "containerPort": 9000},
    ])
    assert cfg.mappings == (
        pm.MappingSpec(8080, 80, "tcp"),
        pm.MappingSpec(53, 53, "udp", ipaddress.ip_address("192.0.2.1")),
        pm.MappingSpec(9000, 9000, "tcp"),
    )


@pytest.mark.parametrize(("mapping", "words"), [
    ({"hostPort": 0, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: 0"),
    ({"hostPort": -1, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number: -1"),
    ({"hostPort": 65536, "containerPort": 80, "protocol": "tcp"}, "Invalid host port number"),
    ({"hostPort": 80, "containerPort": 0, "protocol": "tcp"}, "Invalid container port number"),
    ({"hostPort": 80, "containerPort": 99999, "protocol": "tcp"}, "Invalid container port"),
    ({"containerPort": 80, "protocol": "tcp"}, "hostPort is missing"),
    ({"hostPort": "80", "containerPort": 80}, "hostPort must be an integer"),
    ({"hostPort": True, "containerPort": 80}, "hostPort must be an integer"),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, 'unknown protocol "icmp"'),
    ({"hostPort": 80, "containerPort": 80, "protocol": 6}, "protocol must be a string"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "300.1.1.1"}, 'invalid hostIP "300.1.1.1"'),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "::1"}, "hostIP ::1 cannot be published"),
    ("8080:80", "portMappings[1] must be a JSON object"),
])
def test_bad_mappings_name_the_problem(mapping: Any, words: str) -> None:
    good = {"hostPort": 1, "containerPort": 1, "protocol": "tcp"}
    err = error({}, [good, mapping])
    assert words in f"{err.msg}: {err.details}"
    assert err.code == 7


def test_port_mappings_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="portMappings must be a JSON list"):
        pm.parse_config({}, {"portMappings": {"hostPort": 1}})


def test_options() -> None:
    cfg = parse({"snat": False, "masqAll": True, "markMasqBit": 5,
                 "conditionsV4": ["-d", "192.0.2.0/24"], "conditionsV6": ["!", "-d", "::1"]})
    assert cfg.options == pm.Options(snat=False, masq_all=True, mark_masq_bit=5,
                                     conditions_v4=("-d", "192.0.2.0/24"),
                                     conditions_v6=("!", "-d", "::1"))
    assert cfg.implied_backend == "iptables" and cfg.wanted_backend == "iptables"
    assert to_options(cfg.options).mark == "0x20/0x20"


@pytest.mark.parametrize(("config", "message"), [
    ({"markMasqBit": 13, "externalSetMarkChain": "KUBE-MARK-MASQ"},
     "Cannot specify externalSetMarkChain and markMasqBit"),
    ({"markMasqBit": 32}, "MasqMarkBit must be between 0 and 31"),
    ({"markMasqBit": -1}, "MasqMarkBit must be between 0 and 31"),
    ({"externalSetMarkChain": ""}, "externalSetMarkChain must be a chain name"),
    ({"snat": "yes"}, "snat must be true or false"),
    ({"conditionsV4": "-d 1.2.3.4"}, "conditionsV4 must be a JSON list"),
    ({"conditionsV4": [1]}, "conditionsV4 must be a list of strings"),
    ({"backend": "pf"}, 'unknown backend "pf"'),
    ({"backend": "iptables", "conditionsV4": ["aaa", "bbbb"], "conditionsV6": ["ccc"]},
     "iptables backend was requested but configuration contains nftables-specific options "
     "[conditionsV4 conditionsV6]"),
    ({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ",
      "conditionsV4": ["-a", "b"], "conditionsV6": ["-c", "d"]},
     "nftables backend was requested but configuration contains iptables-specific options "
     "[externalSetMarkChain conditionsV4 conditionsV6]"),
    ({"conditionsV4": ["-d", "1.2.3.4"], "conditionsV6": ["ip6", "daddr", "::2"]},
     "configuration contains iptables-specific options [conditionsV4] and nftables-specific "
     "options [conditionsV6]"),
])
def test_option_errors_are_the_reference_ones(config: dict[str, Any], message: str) -> None:
    assert error(config).msg == message


@pytest.mark.parametrize(("config", "backend"), [
    ({}, None),
    ({"backend": "nftables"}, "nftables"),
    ({"backend": "iptables"}, "iptables"),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, "iptables"),
    ({"conditionsV4": ["ip", "daddr", "!=", "10.96.0.0/12"]}, "nftables"),
    ({"conditionsV6": ["-m", "addrtype"]}, "iptables"),
    ({"conditionsV4": ["", "-d"]}, None),  # an empty first token is ignored, as the reference
    ({"markMasqBit": 14}, None),  # no backend needs it: nftables simply has no marks
    ({"backend": "nftables", "markMasqBit": 14}, "nftables"),
])
def test_backend_choice(config: dict[str, Any], backend: str | None) -> None:
    assert parse(config).wanted_backend == backend


# --- container addresses -------------------------------------------------------------------------


def result(ifname: str = "eth0") -> Result:
    return parse_result({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"},
                       {"name": ifname, "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.1.0.9/16", "interface": 0},
                {"address": "10.88.0.5/16", "interface": 2},
                {"address": "10.88.0.6/16", "interface": 2},
                {"address": "fd00::5/64", "interface": 2},
                {"address": "fd00::6/64", "interface": 2}],
    }, "1.0.0")


def test_container_ips_are_the_first_of_each_family_on_the_sandbox_interface() -> None:
    ips = pm.container_ips(result(), "eth0")
    assert str(ips.v4) == "10.88.0.5/16" and str(ips.v6) == "fd00::5/64"
    assert [str(i) for i in ips] == ["10.88.0.5/16", "fd00::5/64"]


def test_container_ips_skip_other_interfaces() -> None:
    assert list(pm.container_ips(result("net1"), "eth0")) == []


def test_container_ips_without_interface_index_are_taken() -> None:
    res = Result(ips=(IPConfig(ipaddress.ip_interface("10.0.0.2/24")),
                      IPConfig(ipaddress.ip_interface("fd00::2/64"), interface=7)))
    ips = pm.container_ips(res, "eth0")
    assert str(ips.v4) == "10.0.0.2/24" and str(ips.v6) == "fd00::2/64"  # 7: out of range


def test_container_ips_need_a_sandbox() -> None:
    res = Result(interfaces=(Interface("eth0"),),
                 ips=(IPConfig(ipaddress.ip_interface("10.0.0.2/24"), interface=0),))
    assert list(pm.container_ips(res, "eth0")) == []


# --- entries -------------------------------------------------------------------------------------

OWNER = Owner("net", "cid", "eth0")


def entries(mappings: list[Any], v4: str | None = "10.88.0.5/16",
            v6: str | None = "fd00::5/64") -> list[tuple[str, int, str, str | None]]:
    ips = pm.ContainerIPs(ipaddress.ip_interface(v4) if v4 else None,
                          ipaddress.ip_interface(v6) if v6 else None)
    cfg = parse({}, mappings)
    return [(e.protocol, e.host_port, str(e.container_ip.ip), None if e.host_ip is None
             else str(e.host_ip)) for e in plan_entries(OWNER, cfg.mappings, ips)]


def test_entries_follow_config_order_v4_before_v6() -> None:
    assert entries([{"hostPort": 1, "containerPort": 1, "protocol": "tcp"},
                    {"hostPort": 2, "containerPort": 2, "protocol": "udp"}]) == [
        ("tcp", 1, "10.88.0.5", None), ("tcp", 1, "fd00::5", None),
        ("udp", 2, "10.88.0.5", None), ("udp", 2, "fd00::5", None)]


def test_host_ip_limits_a_mapping_to_its_family() -> None:
    assert entries([{"hostPort": 1, "containerPort": 1, "hostIP": "192.0.2.1"},
                    {"hostPort": 2, "containerPort": 2, "hostIP": "2001:db8::1"},
                    {"hostPort": 3, "containerPort": 3, "hostIP": "0.0.0.0"},
                    {"hostPort": 4, "containerPort": 4, "hostIP": "::"}]) == [
        ("tcp", 1, "10.88.0.5", "192.0.2.1"), ("tcp", 2, "fd00::5", "2001:db8::1"),
        ("tcp", 3, "10.88.0.5", None), ("tcp", 4, "fd00::5", None)]


def test_single_stack_container() -> None:
    assert entries([{"hostPort": 1, "containerPort": 1},
                    {"hostPort": 2, "containerPort": 2, "hostIP": "2001:db8::1"}], v6=None) == [
        ("tcp", 1, "10.88.0.5", None)]
