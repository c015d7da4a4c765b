"""Traffic through the rules each backend installs, on a bridge built by hand.

Topology: H (host) with bridge br0 10.88.0.1/24; containers C1 10.88.0.2 and C2 10.88.0.3 on it;
O (outside) on 198.51.100.0/24 behind H's uplink 198.51.100.1. Only namespaces made here are used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.model import PortmapOptions
from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4
from tests.integration.test_firewall_common import (
    NsRunner,
    flush_conntrack_in,
    mapping,
    masq,
    owner,
)
from tests.netns import Netns, echo_server, probe, veth_between

GATEWAY = "10.88.0.1"
C1_IP, C2_IP = "10.88.0.2", "10.88.0.3"
OPTS = PortmapOptions()


@dataclass
class World:
    host: Netns
    outside: Netns
    c1: Netns
    c2: Netns
    backend: Backend


def _attach(host: Netns, container: Netns, port: str, address: str) -> None:
    veth_between(host, port, container, "eth0")
    host.run("ip", "link", "set", port, "master", "br0")
    container.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    container.run("ip", "route", "add", "default", "via", GATEWAY)


@pytest.fixture(params=["nftables", "iptables"])
def world(request: pytest.FixtureRequest, host_ns: Netns, outside_ns: Netns,
          netns: Callable[[str], Netns]) -> World:
    host_ns.run("ip", "link", "add", "br0", "type", "bridge")
    host_ns.run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0")
    host_ns.run("ip", "link", "set", "br0", "up")
    host_ns.write_sysctl("net.ipv4.ip_forward", "1")
    c1, c2 = netns("C1"), netns("C2")
    _attach(host_ns, c1, "vc1", C1_IP)
    _attach(host_ns, c2, "vc2", C2_IP)
    backend = make_backend(request.param, NsRunner(host_ns))
    return World(host_ns, outside_ns, c1, c2, backend)


C1 = owner("c1")


@contextlib.contextmanager
def published(w: World, proto: str = "tcp") -> Iterator[None]:
    """C1's port 80 (tcp) / 53 (udp) published on host port 8080 / 8053."""
    w.backend.add_portmappings([mapping(C1, "tcp", 8080, f"{C1_IP}/24", 80),
                                mapping(C1, "udp", 8053, f"{C1_IP}/24", 53)], OPTS)
    yield
    w.backend.remove_portmappings(C1, None)


def test_masquerade_shows_the_host_address_outside(world: World) -> None:
    world.backend.add_masquerade(masq(C1, f"{C1_IP}/24"))
    with echo_server(world.outside, "tcp", 7000) as server:
        assert probe(world.c1, "tcp", O_ETH0_V4, 7000).ok
    assert server.peer == H_UPLINK_V4
    # C2 has no masquerade entry: O has no route back to 10.88.0.0/24, so it gets nowhere.
    assert not probe(world.c2, "tcp", O_ETH0_V4, 7000, timeout=1).ok
    world.backend.remove_masquerade(C1, None)
    assert not probe(world.c1, "tcp", O_ETH0_V4, 7000, timeout=1).ok


@pytest.mark.parametrize(("proto", "host_port", "port"), [("tcp", 8080, 80), ("udp", 8053, 53)])
def test_outside_client_reaches_the_container_with_its_own_address(
        world: World, proto: str, host_port: int, port: int) -> None:
    with published(world), echo_server(world.c1, proto, port) as server:
        result = probe(world.outside, proto, H_UPLINK_V4, host_port)
        assert result.ok, result.output
        if proto == "udp":  # the flow is in conntrack until the mapping's owner changes
            assert flush_conntrack_in(world.host, host_port, f"{C1_IP}/24") >= 1
            assert flush_conntrack_in(world.host, host_port, f"{C1_IP}/24") == 0
    assert server.peer == O_ETH0_V4  # external clients are never SNATed


def test_hairpin_from_a_sibling_is_masqueraded(world: World) -> None:
    with published(world), echo_server(world.c1, "tcp", 80) as server:
        result = probe(world.c2, "tcp", H_UPLINK_V4, 8080)
        assert result.ok, result.output
    assert server.peer == GATEWAY


def test_hairpin_to_itself(world: World) -> None:
    world.host.run("ip", "link", "set", "vc1", "type", "bridge_slave", "hairpin", "on")
    with published(world), echo_server(world.c1, "tcp", 80) as server:
        result = probe(world.c1, "tcp", H_UPLINK_V4, 8080)
        assert result.ok, result.output
    assert server.peer == GATEWAY


def test_localhost_reaches_the_container(world: World) -> None:
    world.host.write_sysctl("net/ipv4/conf/br0/route_localnet", "1")  # the plugin's job
    with published(world), echo_server(world.c1, "tcp", 80) as server:
        result = probe(world.host, "tcp", "127.0.0.1", 8080)
        assert result.ok, result.output
    assert server.peer == GATEWAY


def test_transit_traffic_to_the_same_port_is_untouched(world: World) -> None:
    world.outside.run("ip", "route", "add", "10.88.0.0/24", "via", H_UPLINK_V4)
    with published(world), echo_server(world.c2, "tcp", 8080) as server:
        result = probe(world.outside, "tcp", C2_IP, 8080)
        assert result.ok, result.output
    assert server.peer == O_ETH0_V4


def test_removed_mapping_stops_forwarding(world: World) -> None:
    with published(world):
        pass
    with echo_server(world.c1, "tcp", 80):
        assert not probe(world.outside, "tcp", H_UPLINK_V4, 8080, timeout=1).ok


def _send_to_loopback_from_outside(w: World) -> str | None:
    """O sends a UDP datagram to 127.0.0.1:8053 through H; returns the peer C1 saw, if any."""
    with echo_server(w.c1, "udp", 53) as server:
        probe(w.outside, "udp", "127.0.0.1", 8053, timeout=1)
        server.proc.kill()
    return server.wait(timeout=1)


@pytest.mark.parametrize("world", ["nftables"], indirect=True)
def test_loopback_published_port_is_not_reachable_from_the_network(world: World) -> None:
    """route_localnet on every interface (worst case): 127.0.0.1 from the LAN is dropped."""
    world.host.write_sysctl("net.ipv4.conf.all.route_localnet", "1")
    world.host.write_sysctl("net.ipv4.conf.uplink.route_localnet", "1")
    world.outside.run("ip", "addr", "flush", "dev", "lo")  # no local 127/8 routes in O
    world.outside.run("ip", "route", "add", "127.0.0.1/32", "via", H_UPLINK_V4)
    with published(world):
        assert _send_to_loopback_from_outside(world) is None
        # Without our drop rule the datagram would have reached the container.
        world.host.run("nft", "flush", "chain", "inet", "cni_bridge", "hostport_localnet")
        assert _send_to_loopback_from_outside(world) == O_ETH0_V4
