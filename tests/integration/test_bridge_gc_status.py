"""GC and STATUS (cniVersion 1.1.0; TESTING.md §5 H). The reference has neither (GC is a no-op,
STATUS only delegates): ours releases what invalid attachments hold in IPAM and in both
firewall backends, and STATUS fails with code 50 when ADD could not work."""

from __future__ import annotations

from tests.integration.test_bridge_common import GW4, Bench, bench, parallel, ping

__all__ = ["bench"]


def test_gc_keeps_only_valid_attachments(bench: Bench) -> None:
    nft = bench.config("1.1.0", ipMasq=True, ipMasqBackend="nftables", isDefaultGateway=True)
    ipt = {**nft, "ipMasqBackend": "iptables"}
    c1, c2, c3 = bench.make_ns("C1"), bench.make_ns("C2"), bench.make_ns("C3")
    r1, _, _ = parallel(lambda a: bench.add(a[0], a[1], cid=a[2]),
                        [(c1, nft, "c1"), (c2, nft, "c2"), (c3, ipt, "c3")])
    for cid in ("c1", "c2", "c3"):
        assert bench.owner_traces(cid), cid

    gc = {**nft, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    bench.ok("GC", None, gc)
    assert list(bench.reservations().values()) == ["c1/eth0"]
    assert bench.owner_traces("c2") == [] and bench.owner_traces("c3") == []
    assert bench.owner_traces("c1")
    assert ping(c1, GW4) == {GW4: True}
    bench.ok("CHECK", c1, nft, cid="c1", prev=r1)


def test_status(bench: Bench) -> None:
    healthy = bench.config("1.1.0", ipMasq=True)
    bench.host.run("ip", "link", "add", "br-taken", "type", "veth", "peer", "name", "peer0")
    taken = {**healthy, "bridge": "br-taken"}
    ok, bad = parallel(lambda cfg: bench.call("STATUS", None, cfg), [healthy, taken])
    assert ok.rc == 0 and ok.stdout == "", ok
    assert bad.rc != 0 and bad.json["code"] == 50, bad
    assert '"br-taken" already exists but is not a bridge' in bad.json["msg"]
