"""IPv6 and dual stack: no tentative addresses at return, the host reaches the container over
v6, DAD sysctls (`enabledad`), and CHECK passing for 6 and dual stack (USERS.md item 11)."""

from __future__ import annotations

from tests.integration.test_bridge_common import (
    BRIDGE,
    GW4,
    GW6,
    Bench,
    bench,
    first_ip,
    parallel,
    ping,
)
from tests.netns import Netns

__all__ = ["bench"]


def tentative(ns: Netns) -> list[str]:
    return [f"{e['ifname']} {a['local']}" for e in ns.ip_json("-6", "addr", "show", "tentative")
            for a in e["addr_info"]]


def test_ipv6_and_dual_stack(bench: Bench) -> None:
    c6, cd, cdad = bench.make_ns("C6"), bench.make_ns("CD"), bench.make_ns("CDAD")
    v6 = bench.config(ipam="v6", isDefaultGateway=True)
    dual = bench.config(ipam="dual", isDefaultGateway=True)
    r6 = bench.add(c6, v6, cid="c6")
    assert tentative(c6) == []  # checked at once: the plugin returns with settled addresses
    rd, rdad = parallel(lambda a: bench.add(a[0], a[1], cid=a[2]),
                        [(cd, dual, "cd"), (cdad, {**v6, "enabledad": True}, "cdad")])
    assert tentative(cd) == [] and tentative(cdad) == []

    assert [ip["address"] for ip in r6["ips"]] == ["fd00:77::2/64"]
    assert r6["ips"][0]["gateway"] == GW6 and r6["ips"][0]["interface"] == 2
    # cd and cdad were added concurrently: either may have had fd00:77::3.
    assert [ip["address"] for ip in rd["ips"]] in (["10.77.0.2/24", "fd00:77::3/64"],
                                                  ["10.77.0.2/24", "fd00:77::4/64"])
    assert {r["dst"]: r["gw"] for r in rd["routes"]} == {"0.0.0.0/0": GW4, "::/0": GW6}
    assert sorted(bench.addresses(bench.host, BRIDGE)) == [f"{GW4}/24", f"{GW6}/64"]
    assert bench.host.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert bench.host.sysctl("net.ipv4.ip_forward") == "1"
    assert [r["gateway"] for r in c6.ip_json("-6", "route", "show", "default")] == [GW6]

    # DAD: off by default (IPAM guarantees uniqueness), on with enabledad.
    assert c6.sysctl("net.ipv6.conf.eth0.accept_dad") == "0"
    assert cdad.sysctl("net.ipv6.conf.eth0.accept_dad") == "1"
    assert cdad.sysctl("net.ipv6.conf.eth0.enhanced_dad") == "1"
    assert c6.sysctl("net.ipv6.conf.eth0.keep_addr_on_down") == "1"
    # ... and never on the bridge, whose tentative link-local would drop the first packets.
    assert bench.host.sysctl(f"net.ipv6.conf.{BRIDGE}.accept_dad") == "0"

    ip6, ipd4, ipd6 = first_ip(r6, 6), first_ip(rd, 4), first_ip(rd, 6)
    assert ping(bench.host, ip6, ipd4, ipd6, first_ip(rdad, 6)) == {
        ip6: True, ipd4: True, ipd6: True, first_ip(rdad, 6): True}
    assert ping(c6, ipd6, GW6) == {ipd6: True, GW6: True}

    parallel(lambda a: bench.ok("CHECK", a[0], a[1], cid=a[2], prev=a[3]),
             [(c6, v6, "c6", r6), (cd, dual, "cd", rd)])
