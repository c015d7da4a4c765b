"""Real bytes through published ports, for the default backend and for ``backend: iptables``.

One world per backend (see test_portmap_world): C1 publishes 8080/tcp -> 80, 8053/udp -> 53 and
192.0.2.1:8081/tcp -> 81; C2, its sibling on the same bridge, publishes 8090/tcp -> 80. The
tests only read that state; each checks the peer address the container's server saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_portmap_world import (
    BACKENDS,
    GATEWAY_V4,
    H_EXTRA_V4,
    H_UPLINK_V4,
    H_UPLINK_V6,
    O2_V4,
    O_ETH0_V4,
    O_ETH0_V6,
    Container,
    World,
    build_world,
    normalised,
)
from tests.netns import Netns, echo_server, probe

C1_MAPPINGS = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
    {"hostPort": 8081, "containerPort": 81, "protocol": "tcp", "hostIP": H_EXTRA_V4},
]
C2_MAPPINGS = [{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]


@dataclass
class Published:
    world: World
    c1: Container
    c2: Container


@pytest.fixture(scope="module", params=BACKENDS)
def pub(request: pytest.FixtureRequest, plugin_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    tmp = tmp_path_factory.mktemp(f"pm-traffic-{request.param}")
    with build_world(request.param, plugin_dir, tmp) as world:
        c1 = world.add("pmc1", C1_MAPPINGS)
        c2 = world.add("pmc2", C2_MAPPINGS)
        yield Published(world, c1, c2)


def reach(server_ns: Netns, port: int, client: Netns, to: str, host_port: int,
          proto: str = "tcp") -> str | None:
    """Probe to:host_port from `client` with a one-shot server on `port` in `server_ns`.

    Returns the peer the server saw; fails the test when the probe gets no echo.
    """
    with echo_server(server_ns, proto, port) as server:
        result = probe(client, proto, to, host_port)
        assert result.ok, result.output
    return server.peer


def unreachable(server_ns: Netns, port: int, client: Netns, to: str, host_port: int,
                proto: str = "tcp") -> bool:
    """True when a probe to to:host_port gets no echo and the server saw nobody."""
    with echo_server(server_ns, proto, port) as server:
        result = probe(client, proto, to, host_port, timeout=1)
        server.proc.kill()
    return not result.ok and server.wait(timeout=1) is None


def test_add_output_is_the_bridge_result(pub: Published) -> None:
    """portmap passes prevResult through unchanged, mappings or not."""
    bridge_out = [c for c in pub.c1.runtime.calls
                  if c.command == "ADD" and c.plugin == "bridge"
                  and c.env["CNI_CONTAINERID"] == pub.c1.cid][-1]
    import json

    assert normalised(pub.c1.result) == normalised(json.loads(bridge_out.stdout))


@pytest.mark.parametrize(("proto", "host_port", "port"), [("tcp", 8080, 80), ("udp", 8053, 53)])
def test_outside_reaches_container_with_its_own_address(pub: Published, proto: str,
                                                        host_port: int, port: int) -> None:
    peer = reach(pub.c1.ns, port, pub.world.outside, H_UPLINK_V4, host_port, proto)
    assert peer == O_ETH0_V4  # external clients are never masqueraded


def test_outside_reaches_container_over_ipv6(pub: Published) -> None:
    peer = reach(pub.c1.ns, 80, pub.world.outside, H_UPLINK_V6, 8080)
    assert peer == O_ETH0_V6


def test_host_reaches_its_own_address(pub: Published) -> None:
    """Locally generated traffic (nat OUTPUT) to H's uplink address is forwarded.

    Its source is H's own address, which the container can answer: nothing is masqueraded.
    """
    assert reach(pub.c1.ns, 80, pub.world.host, H_UPLINK_V4, 8080) == H_UPLINK_V4
    assert reach(pub.c1.ns, 80, pub.world.host, H_UPLINK_V6, 8080) == H_UPLINK_V6


def test_host_reaches_localhost_masqueraded(pub: Published) -> None:
    assert reach(pub.c1.ns, 80, pub.world.host, "127.0.0.1", 8080) == GATEWAY_V4
    assert pub.world.host.sysctl(f"net/ipv4/conf/{'pmbr0'}/route_localnet") == "1"


@pytest.mark.parametrize("nf_call", ["1", "0"])
def test_hairpin_to_itself_and_to_a_sibling(pub: Published, nf_call: str) -> None:
    host = pub.world.host
    key = "net.bridge.bridge-nf-call-iptables"
    before = host.sysctl(key)
    host.write_sysctl(key, nf_call)
    try:
        assert reach(pub.c1.ns, 80, pub.c1.ns, H_UPLINK_V4, 8080) == GATEWAY_V4
        assert reach(pub.c1.ns, 80, pub.c2.ns, H_UPLINK_V4, 8080) == GATEWAY_V4
        assert reach(pub.c2.ns, 80, pub.c1.ns, H_UPLINK_V4, 8090) == GATEWAY_V4
    finally:
        host.write_sysctl(key, before)


def test_host_ip_mapping_answers_only_on_that_address(pub: Published) -> None:
    outside = pub.world.outside
    assert reach(pub.c1.ns, 81, outside, H_EXTRA_V4, 8081) == O_ETH0_V4
    assert unreachable(pub.c1.ns, 81, outside, H_UPLINK_V4, 8081)


def test_transit_traffic_to_a_published_port_is_not_translated(pub: Published) -> None:
    """O -> O2:8080 is routed through H, and must reach O2, not C1."""
    w = pub.world
    for proto, port in (("tcp", 8080), ("udp", 8053)):
        with echo_server(pub.c1.ns, proto, 80 if proto == "tcp" else 53) as container:
            assert reach(w.outside2, port, w.outside, O2_V4, port, proto) == O_ETH0_V4
            container.proc.kill()
        assert container.wait(timeout=1) is None


def test_localhost_port_is_not_reachable_from_a_neighbour(pub: Published) -> None:
    """O2 routes 127.0.0.1 to H: its datagrams to 127.0.0.1:8053 must not reach C1.

    The reference's iptables layout DNATs them (``--dst-type LOCAL`` matches 127.0.0.1 before
    any routing check), so the backend must drop 127.0.0.0/8 arriving on anything but lo.
    """
    w = pub.world
    assert unreachable(pub.c1.ns, 53, w.outside2, "127.0.0.1", 8053, "udp")
    assert unreachable(pub.c1.ns, 80, w.outside2, "127.0.0.1", 8080, "tcp")
    # ... while H itself still gets there.
    assert reach(pub.c1.ns, 53, w.host, "127.0.0.1", 8053, "udp") == GATEWAY_V4


def test_check_passes(pub: Published) -> None:
    pub.world.runtime.check(pub.world.conflist, pub.c1.rt)
    pub.world.runtime.check(pub.world.conflist, pub.c2.rt)
