"""The data objects between plugins and backends, and their validation."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from cni_bridge.firewall import (
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    conditions_backend,
    needs_route_localnet,
    validate_mappings,
)
from cni_bridge.firewall.conntrack import flush_udp_conntrack, plan_udp_flush
from cni_bridge.firewall.runner import CommandResult
from cni_bridge.spec.errors import ConfigError

OWNER = Owner("mynet", "abc123", "eth0")
V4 = ipaddress.ip_interface("10.88.0.2/16")
V6 = ipaddress.ip_interface("fd00::2/64")


def pm(proto: str = "tcp", host_port: int = 8080, container: ipaddress.IPv4Interface
       | ipaddress.IPv6Interface = V4, host_ip: str | None = None) -> PortMapping:
    return PortMapping(OWNER, proto, host_port, container, 80,  # type: ignore[arg-type]
                       ipaddress.ip_address(host_ip) if host_ip else None)


def test_masq_entry_of_uses_the_address_network() -> None:
    assert MasqEntry.of(OWNER, V4).subnet == ipaddress.ip_network("10.88.0.0/16")
    with pytest.raises(ConfigError, match="not of the family"):
        MasqEntry(OWNER, V4, ipaddress.ip_network("fd00::/64"))


def test_unspecified_host_ip_means_any() -> None:
    assert pm(host_ip="0.0.0.0").host_ip is None
    assert pm(container=V6, host_ip="::").host_ip is None
    assert pm(host_ip="127.0.0.1").describe() == "127.0.0.1:8080/tcp"
    assert pm(container=V6, host_ip="2001:db8::1").describe() == "[2001:db8::1]:8080/tcp"


@pytest.mark.parametrize(("mapping", "message"), [
    (pm(proto="icmp"), "unknown protocol"),
    (pm(host_port=0), "invalid host port 0"),
    (pm(host_port=70000), "invalid host port 70000"),
    (pm(host_ip="2001:db8::1"), "host IP family differs"),
    (pm(container=V6, host_ip="::1"), "IPv6 loopback cannot be published"),
])
def test_invalid_mappings_are_rejected_by_name(mapping: PortMapping, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_mappings([mapping])


def test_conditions_backend_follows_the_first_token() -> None:
    assert conditions_backend(()) is None
    assert conditions_backend(["!", "-s", "10.0.0.0/8"]) == "iptables"
    assert conditions_backend(["-m", "addrtype"]) == "iptables"
    assert conditions_backend(["ip", "daddr", "!=", "10.0.0.0/8"]) == "nftables"


def test_route_localnet_only_for_ipv4_localhost_publishing() -> None:
    opts = PortmapOptions()
    assert needs_route_localnet([pm()], opts)
    assert needs_route_localnet([pm(host_ip="127.0.0.1")], opts)
    assert not needs_route_localnet([pm(host_ip="198.51.100.1")], opts)
    assert not needs_route_localnet([pm(container=V6)], opts)
    assert not needs_route_localnet([pm()], PortmapOptions(snat=False))
    assert not needs_route_localnet([pm()], PortmapOptions(masq_all=True))


def test_mark_is_formatted_like_go() -> None:
    assert PortmapOptions().mark == "0x2000/0x2000"
    assert PortmapOptions(mark_masq_bit=0).mark == "0x1/0x1"


def test_conntrack_flush_plans_one_call_per_family_and_udp_port() -> None:
    entries = [pm("udp", 53), pm("udp", 53, V6), pm("udp", 53), pm("tcp", 80)]
    assert plan_udp_flush(entries) == [
        ["conntrack", "-D", "-f", "ipv4", "-p", "udp", "--orig-port-dst", "53"],
        ["conntrack", "-D", "-f", "ipv6", "-p", "udp", "--orig-port-dst", "53"]]


def test_conntrack_flush_counts_and_never_raises() -> None:
    answers = iter([
        CommandResult((), 0, "", "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been "
                                 "deleted.\n"),
        CommandResult((), 1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been "
                                 "deleted.\n"),
        CommandResult((), 127, "", "conntrack: command not found")])
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], input: str | None = None) -> CommandResult:
        calls.append(list(argv))
        return next(answers)

    entries = [pm("udp", 1), pm("udp", 2), pm("udp", 3)]
    assert flush_udp_conntrack(runner, entries) == 3
    assert len(calls) == 3
