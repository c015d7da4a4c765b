"""CHECK (TESTING.md §5 D, USERS.md item 17): passes after ADD, tolerates what later plugins
change (an extra route, the MTU), and names each kind of drift precisely. IPv6 and dual-stack
passes are in test_bridge_ipv6, L2 mode in test_bridge_fields.

Drifts are applied one at a time to one container and undone after CHECK has caught them, so
one ADD serves several cases; the destructive ones come last.
"""

from __future__ import annotations

from tests.integration.test_bridge_common import BRIDGE, GW4, NETWORK, Bench, bench, parallel

__all__ = ["bench"]


def test_check_detects_each_drift(bench: Bench) -> None:
    cfg = bench.config(ipMasq=True, ipMasqBackend="nftables", isDefaultGateway=True)
    ca, cb, cc = bench.make_ns("CA"), bench.make_ns("CB"), bench.make_ns("CC")
    ra, rb, rc = parallel(lambda a: bench.add(a[0], cfg, cid=a[1]),
                          [(ca, "ca"), (cb, "cb"), (cc, "cc")])
    ip = ra["ips"][0]["address"]

    def check_ok() -> None:
        bench.ok("CHECK", ca, cfg, cid="ca", prev=ra)

    def check_fails(*expected: str) -> None:
        err = bench.fails("CHECK", ca, cfg, cid="ca", prev=ra)
        for text in expected:
            assert text in err["text"], err

    check_ok()
    # What a later plugin (tuning, a route-adding plugin) may change is not drift.
    ca.run("ip", "link", "set", "eth0", "mtu", "1400")
    ca.run("ip", "route", "add", "192.0.2.0/24", "via", GW4)
    check_ok()

    ca.run("ip", "addr", "del", ip, "dev", "eth0")
    check_fails(f"address {ip} is missing")
    ca.run("ip", "addr", "add", ip, "dev", "eth0")
    ca.run("ip", "route", "replace", "default", "via", GW4)
    check_ok()

    ca.run("ip", "route", "del", "default")
    check_fails(f"route to 0.0.0.0/0 via {GW4} is missing")
    ca.run("ip", "route", "add", "default", "via", GW4)

    reservation = bench.data_dir / NETWORK / ip.split("/")[0]
    content = reservation.read_bytes()
    reservation.unlink()
    check_fails("no reservation for container ca ifname eth0")
    reservation.write_bytes(content)
    check_ok()

    host_veth = ra["interfaces"][1]["name"]
    bench.host.run("ip", "link", "set", host_veth, "nomaster")
    check_fails(f'no host veth attached to "{BRIDGE}" is the peer of "eth0"')
    bench.host.run("ip", "link", "set", host_veth, "master", BRIDGE)
    check_ok()

    nft_map = bench.drop_nft_masq_source(ip.split("/")[0], "ca")
    check_fails("masquerade rules of container ca are missing", f"{nft_map} is missing")

    ca.run("ip", "link", "del", "eth0")
    check_fails('container interface "eth0" does not exist')

    bench.host.run("ip", "link", "del", rb["interfaces"][1]["name"])
    err = bench.fails("CHECK", cb, cfg, cid="cb", prev=rb)
    assert '"eth0" does not exist' in err["text"], err  # a veth pair dies as one

    bench.ok("CHECK", cc, cfg, cid="cc", prev=rc)
    bench.host.run("ip", "link", "del", BRIDGE)
    err = bench.fails("CHECK", cc, cfg, cid="cc", prev=rc)
    assert f'bridge "{BRIDGE}" does not exist' in err["text"], err


def test_check_needs_prev_result(bench: Bench) -> None:
    c = bench.make_ns("C")
    cfg = bench.config()
    bench.add(c, cfg)
    err = bench.fails("CHECK", c, cfg)
    assert "Required prevResult missing" in err["text"], err
