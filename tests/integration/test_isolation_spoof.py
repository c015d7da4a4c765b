"""``ipspoofchk``: a container cannot claim an address it was not given (USERS.md item 21).

Attacker A and victim V share the bridge of a dual-stack network. A takes another address and
sends from it, or tells the gateway H (ARP reply, unsolicited neighbour advertisement) that V's
address is at A's MAC. With the option the frames are dropped and H's neighbour table still maps
V's addresses to V; without it the same attacks succeed, which is what the option is for.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

from tests.integration.test_bridge_common import BRIDGE, GW4, GW6, Bench, bench, first_ip, ping
from tests.netns import Netns, echo_server, wait_ipv6_settled

__all__ = ["bench"]

PORT = 7100
# The attacks, from inside a namespace (no arping/ndisc tools on these machines).
ATTACK = r"""
import ipaddress, socket, struct, sys, time
mode = sys.argv[1]
def mac_of(dev):
    return bytes.fromhex(open(f"/sys/class/net/{dev}/address").read().strip().replace(":", ""))
if mode == "connect":               # connect SRC DST PORT: TCP from a chosen source address
    src, dst, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1.5)
    s.bind((src, 0))
    try:
        s.connect((dst, port)); s.sendall(b"x"); print("ok")
    except OSError as exc:
        print("fail", exc)
elif mode == "arp":                 # arp DEV SENDER_IP TARGET_IP TARGET_MAC: ARP reply
    dev, sip, tip, tmac = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    me, them = mac_of(dev), bytes.fromhex(tmac.replace(":", ""))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    frame = them + me + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + me + \
        socket.inet_aton(sip) + them + socket.inet_aton(tip)
    for _ in range(3):
        s.send(frame); time.sleep(0.1)
    print("sent")
elif mode == "na":                  # na DEV TARGET DST: unsolicited NA, override, our MAC
    dev, target, dst = sys.argv[2], sys.argv[3], sys.argv[4]
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + \
        ipaddress.IPv6Address(target).packed + bytes([2, 1]) + mac_of(dev)
    for _ in range(3):
        s.sendto(msg, (dst, 0)); time.sleep(0.1)
    print("sent")
"""


def attack(ns: Netns, *args: str) -> str:
    return ns.run(sys.executable, "-c", ATTACK, *args, timeout=20).stdout.strip()


def neighbour(host: Netns, ip: str) -> str | None:
    entries = host.ip_json("neigh", "show", "to", ip, "dev", BRIDGE)
    return entries[0].get("lladdr") if entries else None


def mac(result: dict[str, Any]) -> str:
    return str(result["interfaces"][2]["mac"])


def two_containers(bench: Bench, on: bool) -> tuple[Netns, dict[str, Any], Netns, dict[str, Any]]:
    cfg = bench.config(ipam="dual", ipspoofchk=True if on else None)
    a, v = bench.make_ns("A"), bench.make_ns("V")
    ra, rv = bench.add(a, cfg, cid="attacker"), bench.add(v, cfg, cid="victim")
    for ns in (a, v):
        wait_ipv6_settled(ns)
    # Legitimate traffic (ARP, NDP, both families) passes the rules.
    targets = [GW4, GW6, first_ip(rv, 4), first_ip(rv, 6)]
    assert ping(a, *targets) == dict.fromkeys(targets, True)
    return a, ra, v, rv


@pytest.mark.parametrize("on", [True, False], ids=["ipspoofchk", "off"])
@pytest.mark.parametrize("version", [4, 6])
def test_sending_from_another_address(bench: Bench, on: bool, version: int) -> None:
    a, ra, _, _ = two_containers(bench, on)
    other, gw = ("10.77.0.200", GW4) if version == 4 else ("fd00:77::200", GW6)
    a.run("ip", "addr", "add", f"{other}/{24 if version == 4 else 64}", "dev", "eth0", "nodad")
    mine = first_ip(ra, version)
    with echo_server(bench.host, "tcp", PORT) as server:
        assert attack(a, "connect", mine, gw, str(PORT)) == "ok"  # its own address works
    assert server.peer == mine
    with echo_server(bench.host, "tcp", PORT) as server:
        out = attack(a, "connect", other, gw, str(PORT))
    if on:
        assert out.startswith("fail") and server.peer is None, out
    else:
        assert out == "ok" and server.peer == other


@pytest.mark.parametrize("on", [True, False], ids=["ipspoofchk", "off"])
def test_arp_claiming_another_containers_address(bench: Bench, on: bool) -> None:
    a, ra, _, rv = two_containers(bench, on)
    victim = first_ip(rv, 4)
    assert ping(bench.host, victim) == {victim: True}
    assert neighbour(bench.host, victim) == mac(rv)
    time.sleep(1.2)  # past the neighbour entry's locktime: a later reply may override it
    br_mac = bench.links()[BRIDGE]["address"]
    assert attack(a, "arp", "eth0", victim, GW4, br_mac) == "sent"
    assert neighbour(bench.host, victim) == (mac(rv) if on else mac(ra))


@pytest.mark.parametrize("on", [True, False], ids=["ipspoofchk", "off"])
def test_neighbour_advertisement_for_another_containers_address(bench: Bench, on: bool) -> None:
    a, ra, _, rv = two_containers(bench, on)
    victim = first_ip(rv, 6)
    assert ping(bench.host, victim) == {victim: True}
    assert neighbour(bench.host, victim) == mac(rv)
    assert attack(a, "na", "eth0", victim, GW6) == "sent"
    assert neighbour(bench.host, victim) == (mac(rv) if on else mac(ra))


def nat_table(bench: Bench) -> str:
    return bench.host.run("nft", "list", "table", "bridge", "nat", check=False).stdout


def test_rules_check_and_del(bench: Bench) -> None:
    c = bench.make_ns("C")
    cfg = bench.config(ipam="dual", ipspoofchk=True)
    result = bench.add(c, cfg, cid="pinned")
    listing = nat_table(bench)
    assert f"ip saddr != {first_ip(result, 4)} drop" in listing
    assert f'arp saddr ether != {mac(result)} drop' in listing
    assert 'comment "ipspoofchk-pinned-eth0: ipv6 source"' in listing
    bench.ok("CHECK", c, cfg, cid="pinned", prev=result)
    chain = json.loads(bench.host.run("nft", "-j", "list", "chain", "bridge", "nat",
                                      "cni-br-iface-pinned-eth0").stdout)["nftables"]
    handle = next(r["rule"]["handle"] for r in chain
                  if "rule" in r and r["rule"].get("comment", "").endswith("arp sender ip"))
    bench.host.run("nft", "delete", "rule", "bridge", "nat", "cni-br-iface-pinned-eth0",
                   "handle", str(handle))
    err = bench.fails("CHECK", c, cfg, cid="pinned", prev=result)
    assert "arp sender ip" in err["text"], err
    bench.ok("DEL", c, cfg, cid="pinned", prev=result)
    assert "pinned" not in nat_table(bench)


def test_failed_add_removes_the_rules(bench: Bench) -> None:
    c = bench.make_ns("C")
    cfg = bench.config(ipspoofchk=True)
    fail_at = "cni_bridge.net.links.wait_link_oper_up"  # the last step, after the rules
    run = bench.call("ADD", c, cfg, fail_at=fail_at)
    assert run.rc != 0 and "injected failure" in run.json["msg"], run
    assert "cni-br-iface" not in nat_table(bench)
    assert bench.reservations() == {}


@pytest.mark.parametrize(("fields", "message"), [
    ({"ipam": None}, "ipspoofchk needs IPAM"),
    ({"vlanTrunk": [{"id": 5}]}, "trunk"),
])
def test_config_errors(bench: Bench, fields: dict[str, Any], message: str) -> None:
    cfg = bench.config(ipspoofchk=True)
    cfg.update(fields)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    err = bench.fails("ADD", bench.make_ns("C"), cfg)
    assert message in err["text"], err
