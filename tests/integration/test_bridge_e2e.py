"""The seed scenario end to end: two containers on one bridge, the host, the outside, then DEL
back to baseline (leftovers documented in test_bridge_common)."""

from __future__ import annotations

from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4
from tests.integration.test_bridge_common import (
    BRIDGE,
    ECHO_PORT,
    GW4,
    Bench,
    assert_back_to_baseline,
    bench,
    first_ip,
    parallel,
    ping,
    snapshot,
)
from tests.netns import Netns, echo_server, probe

__all__ = ["bench"]


def test_two_containers_host_and_outside_then_baseline(bench: Bench, outside_ns: Netns) -> None:
    before = snapshot(bench.host)
    c1, c2 = bench.make_ns("C1"), bench.make_ns("C2")
    cfg = bench.config(isDefaultGateway=True, ipMasq=True, ipMasqBackend="nftables")
    r1, r2 = parallel(lambda a: bench.add(a[0], cfg, cid=a[1]), [(c1, "c1"), (c2, "c2")])
    ip1, ip2 = first_ip(r1), first_ip(r2)
    assert {ip1, ip2} == {"10.77.0.2", "10.77.0.3"}

    # Container <-> container, both directions, ICMP and TCP.
    assert ping(c1, ip2) == {ip2: True}
    assert ping(c2, ip1) == {ip1: True}
    with echo_server(c2, "tcp", ECHO_PORT) as server:
        assert probe(c1, "tcp", ip2, ECHO_PORT).ok
    assert server.peer == ip1  # no masquerading inside the subnet

    # Host <-> containers.
    assert ping(bench.host, ip1, ip2) == {ip1: True, ip2: True}
    assert ping(c1, GW4) == {GW4: True}
    with echo_server(bench.host, "tcp", ECHO_PORT) as server:
        assert probe(c1, "tcp", GW4, ECHO_PORT).ok
    assert server.peer == ip1

    # Outside: O has no route back to the pod subnet, so only masquerading makes this work.
    with echo_server(outside_ns, "tcp", ECHO_PORT) as server:
        assert probe(c2, "tcp", O_ETH0_V4, ECHO_PORT).ok
    assert server.peer == H_UPLINK_V4
    assert bench.host.sysctl("net.ipv4.ip_forward") == "1"

    # DEL of one container leaves the other fully working (shared bridge, rules, gateway).
    bench.ok("DEL", c1, cfg, cid="c1", prev=r1)
    assert bench.owner_traces("c1") == [] and bench.owner_traces("c2")
    with echo_server(outside_ns, "tcp", ECHO_PORT) as server:
        assert probe(c2, "tcp", O_ETH0_V4, ECHO_PORT).ok
    assert server.peer == H_UPLINK_V4
    bench.ok("DEL", c2, cfg, cid="c2", prev=r2)
    assert bench.reservations() == {}
    assert bench.masq_state() == []
    for c in (c1, c2):
        assert [li["ifname"] for li in c.ip_json("link", "show")] == ["lo"]
    assert BRIDGE in bench.links(kind="bridge")  # kept, like the reference
    assert_back_to_baseline(bench.host, before)
