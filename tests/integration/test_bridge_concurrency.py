"""16 concurrent ADDs onto a bridge that does not exist yet, then 16 concurrent DELs
(TESTING.md §5 I, USERS.md item 14: first use must be race-free)."""

from __future__ import annotations

import json

from cni_bridge.firewall.nft.schema import masq_chain
from tests.integration.test_bridge_common import BRIDGE, GW4, Bench, bench, parallel, ping

__all__ = ["bench"]

N = 16


def test_concurrent_add_then_concurrent_del(bench: Bench) -> None:
    cfg = bench.config(ipMasq=True, ipMasqBackend="nftables", isDefaultGateway=True)
    cs = [bench.make_ns(f"C{i}") for i in range(N)]
    assert BRIDGE not in bench.links()
    results = parallel(lambda i: bench.add(cs[i], cfg, cid=f"c{i}"), range(N), workers=N)

    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == N
    assert {a for c in cs for a in bench.addresses(c, "eth0")} == set(addresses)
    assert list(bench.links(kind="bridge")) == [BRIDGE]
    assert bench.addresses(bench.host, BRIDGE) == [f"{GW4}/24"]
    veths = bench.links(kind="veth")
    assert len(veths) == N and all(v["master"] == BRIDGE for v in veths.values())
    assert sorted(veths) == bench.host_veths()
    assert sorted(bench.reservations().values()) == sorted(f"c{i}/eth0" for i in range(N))
    owners = {c.rsplit("id: ", 1)[1] for c in bench.nft_masq_comments()}
    assert owners == {f"c{i}" for i in range(N)}
    chain = json.loads(bench.host.run("nft", "-j", "list", "chain", "inet", "cni_bridge",
                                      "masq_postrouting").stdout)["nftables"]
    assert len([i for i in chain if "rule" in i]) == len(masq_chain().rules)  # once, not 16x
    first, last = (r["ips"][0]["address"].split("/")[0] for r in (results[0], results[-1]))
    assert ping(cs[0], last) == {last: True} and ping(cs[-1], first) == {first: True}

    parallel(lambda i: bench.ok("DEL", cs[i], cfg, cid=f"c{i}", prev=results[i]), range(N),
             workers=N)
    assert bench.reservations() == {}
    assert bench.host_veths() == []
    assert bench.masq_state() == []
