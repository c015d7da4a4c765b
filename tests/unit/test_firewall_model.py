"""The data objects between plugins and backends, and their validation."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from cni_bridge.cni.errors import ConfigError
from cni_bridge.firewall import conntrack
from cni_bridge.firewall.conntrack import flush_udp_conntrack, plan_udp_flush
from cni_bridge.firewall.model import (
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    conditions_backend,
    needs_route_localnet,
    validate_mappings,
)
from cni_bridge.netlink import attr, nested, parse_attrs

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


def test_conntrack_flush_plans_one_dump_per_family_and_udp_port() -> None:
    entries = [pm("udp", 53), pm("udp", 53, V6), pm("udp", 53), pm("tcp", 80)]
    assert plan_udp_flush(entries) == [(4, 53), (6, 53)]


def ct_entry(proto: int, port: int, entry_id: int = 7) -> bytes:
    """A ctnetlink dump reply: nfgenmsg, then the original tuple and the id."""
    tuple_orig = nested(conntrack.CTA_TUPLE_ORIG, attr(1, b"ip-part"), nested(
        conntrack.CTA_TUPLE_PROTO, attr(conntrack.CTA_PROTO_NUM, bytes([proto])),
        attr(2, struct.pack("!H", 40000)),
        attr(conntrack.CTA_PROTO_DST_PORT, struct.pack("!H", port))))
    return b"\x02\x00\x00\x00" + tuple_orig + attr(conntrack.CTA_ID, struct.pack("!I", entry_id))


def test_conntrack_dump_is_filtered_by_the_kernel_and_checked_here() -> None:
    request = conntrack.dump_request(6, 8053)
    assert request[:4] == bytes([10, 0, 0, 0])  # AF_INET6, NFNETLINK_V0
    found = parse_attrs(request[4:])
    flags = parse_attrs(found[conntrack.CTA_FILTER])[conntrack.CTA_FILTER_ORIG_FLAGS]
    assert struct.unpack("=I", flags)[0] == (conntrack.CTA_FILTER_FLAG_PROTO_NUM
                                             | conntrack.CTA_FILTER_FLAG_PROTO_DST_PORT)
    proto = parse_attrs(parse_attrs(found[conntrack.CTA_TUPLE_ORIG])[conntrack.CTA_TUPLE_PROTO])
    assert proto == {conntrack.CTA_PROTO_NUM: bytes([17]),
                     conntrack.CTA_PROTO_DST_PORT: struct.pack("!H", 8053)}
    # A kernel without dump filters answers with everything: only UDP to the port is deleted.
    deletes = conntrack.matching_deletes(4, 8053, [ct_entry(17, 8053, 1), ct_entry(17, 53, 2),
                                                   ct_entry(6, 8053, 3)])
    assert len(deletes) == 1
    delete = parse_attrs(deletes[0][4:])
    assert delete[conntrack.CTA_ID] == struct.pack("!I", 1)
    assert delete[conntrack.CTA_TUPLE_ORIG] == parse_attrs(ct_entry(17, 8053)[4:])[
        conntrack.CTA_TUPLE_ORIG]


def test_conntrack_flush_never_raises(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[int] = []

    def refused(protocol: int) -> None:
        opened.append(protocol)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(conntrack, "NetlinkSocket", refused)
    assert flush_udp_conntrack([pm("udp", 1), pm("udp", 2, V6)]) == 0
    assert "host ports 1/IPv4, 2/IPv6" in capsys.readouterr().err
    assert opened == [conntrack.NETLINK_NETFILTER]  # one socket for every family and port
    assert flush_udp_conntrack([pm("tcp", 1)]) == 0
    assert opened == [conntrack.NETLINK_NETFILTER]  # nothing to do: no socket either
