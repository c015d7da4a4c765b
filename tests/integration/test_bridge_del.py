"""DEL never leaks (USERS.md item 6, TESTING.md §5 E): whatever state the container is in and
whatever the runtime sends, the reservation and the masquerade entries go, in both backends.

When the container namespace cannot be reached (CNI_NETNS empty or not a namespace) the host veth
named in prevResult is removed too. Without either, nothing names the host veth; it goes when the
container namespace goes (as with the reference)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import fake_ipam
from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4
from tests.integration.test_bridge_common import ECHO_PORT, GW4, Bench, bench, parallel, ping
from tests.netns import Netns, echo_server, probe

__all__ = ["bench"]

# cid -> (what is done to the container before DEL, whether DEL gets the prevResult)
CASES = {
    "twice": ("nothing; DEL runs twice", True),
    "nonetns": ("DEL with CNI_NETNS empty", True),
    "nsgone": ("container namespace deleted", False),
    "nolink": ("container interface deleted", False),
    "noaddr": ("addresses flushed from the container interface", False),
    "plainfile": ("CNI_NETNS is a plain file, not a namespace", True),
}


# The bridge's DEL is the same code for both backends but for where the addresses come from
# (the iptables rules are deleted by address): prevResult and the link, or IPAM's records
# alone. iptables runs one case of each kind to keep the suite fast.
BACKEND_CASES = {"nftables": list(CASES), "iptables": ["twice", "nsgone", "nolink"]}


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_del_never_leaks(bench: Bench, backend: str, tmp_path: Path) -> None:
    cases = BACKEND_CASES[backend]
    cfg = bench.config(ipam="dual", ipMasq=True, ipMasqBackend=backend, isDefaultGateway=True)
    ns = {cid: bench.make_ns(cid) for cid in cases}
    results: dict[str, Any] = dict(zip(cases, parallel(
        lambda cid: bench.add(ns[cid], cfg, cid=cid), cases), strict=True))
    assert len(bench.reservations()) == 2 * len(cases)
    for cid in cases:
        assert len(bench.owner_traces(cid)) >= 2, (cid, bench.masq_state())

    subprocess.run(["ip", "netns", "del", ns["nsgone"].name], check=True)
    ns["nolink"].run("ip", "link", "del", "eth0")
    if "noaddr" in ns:
        ns["noaddr"].run("ip", "addr", "flush", "dev", "eth0")
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    netns_arg = {cid: ns[cid].path for cid in cases}
    netns_arg["nonetns"] = ""
    netns_arg["plainfile"] = str(plain)

    def delete(cid: str) -> None:
        prev = results[cid] if CASES[cid][1] else None
        bench.ok("DEL", netns_arg[cid], cfg, cid=cid, prev=prev)
        if cid == "twice":
            bench.ok("DEL", netns_arg[cid], cfg, cid=cid, prev=prev)

    parallel(delete, cases)
    bench.ok("DEL", bench.make_ns("ghost"), cfg, cid="ghost")  # never added
    for cid in cases:
        what = CASES[cid][0]
        assert cid not in " ".join(bench.reservations().values()), what
        assert bench.owner_traces(cid) == [], (what, bench.owner_traces(cid))
    assert bench.reservations() == {}
    assert bench.host_veths() == []
    for cid in set(cases) & {"nolink", "noaddr", "nonetns", "plainfile"}:
        assert list(bench.links(ns[cid])) == ["lo"], CASES[cid][0]

    # ADD -> DEL -> ADD with the same container ID works and is fully functional.
    again = bench.add(ns["twice"], cfg, cid="twice")
    assert ping(ns["twice"], GW4) == {GW4: True}
    assert len(bench.owner_traces("twice")) >= 2
    assert again["interfaces"][2]["sandbox"] == ns["twice"].path


def test_a_failing_ipam_del_does_not_stop_the_rest(bench: Bench, tmp_path: Path) -> None:
    """DEL still removes the link and the masquerade entries, then reports IPAM's error (and
    its code) so that the runtime retries; the retry succeeds."""
    fake_dir = tmp_path / "fake"
    fake_ipam.install(fake_dir, "fake-ipam")
    cfg = bench.config(ipam=None, ipMasq=True)
    cfg["ipam"] = {"type": "fake-ipam", "log": str(tmp_path / "log"),
                   "result": {"ips": [{"address": "10.77.0.9/24", "gateway": GW4}]}}
    path = f"{bench.plugin_dir}:{fake_dir}"
    c = bench.make_ns("C")
    result = bench.add(c, cfg, cni_path=path)
    assert bench.owner_traces("c1")
    failing = {**cfg, "ipam": {**cfg["ipam"], "fail": ["DEL"]}}
    err = bench.fails("DEL", c, failing, prev=result, cni_path=path)
    assert err["code"] == 11 and "fake IPAM told to fail DEL" in err["text"], err
    assert bench.owner_traces("c1") == [] and bench.host_veths() == []
    assert list(bench.links(c)) == ["lo"]
    bench.ok("DEL", c, cfg, prev=result, cni_path=path)
    assert [x["command"] for x in fake_ipam.calls(tmp_path / "log")] == ["ADD", "DEL", "DEL"]


def test_second_attachment_del_keeps_the_first(bench: Bench, outside_ns: Netns) -> None:
    """Two attachments of one container to one network share the reference's iptables chain
    (its name ignores ifname): DEL of eth1 must leave eth0's masquerading working."""
    cfg = bench.config(ipMasq=True, ipMasqBackend="iptables", isDefaultGateway=True)
    c = bench.make_ns("C")
    bench.add(c, cfg, cid="multi", ifname="eth0")
    r1 = bench.add(c, cfg, cid="multi", ifname="eth1")
    assert sorted(bench.reservations().values()) == ["multi/eth0", "multi/eth1"]
    bench.ok("DEL", c, cfg, cid="multi", ifname="eth1", prev=r1)
    assert list(bench.reservations().values()) == ["multi/eth0"]
    assert sorted(bench.links(c)) == ["eth0", "lo"]
    rules = bench.ipt_nat()
    assert len([r for r in rules if r.startswith("-A POSTROUTING")]) == 1, rules
    c.run("ip", "route", "replace", "default", "via", GW4, "dev", "eth0")
    with echo_server(outside_ns, "tcp", ECHO_PORT) as server:
        assert probe(c, "tcp", O_ETH0_V4, ECHO_PORT).ok
    assert server.peer == H_UPLINK_V4
