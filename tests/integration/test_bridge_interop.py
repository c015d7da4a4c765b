"""Interoperation with other IPAM plugins and with the reference plugins in /usr/lib/cni
(Debian 1.1.1: cniVersion up to 1.0.0, iptables masquerading only). TESTING.md §5 J.

- our bridge delegating to a foreign IPAM (a fake that records calls, then the reference
  host-local under another name: when the type is `host-local` ours runs in-process);
- the reference bridge using our host-local from CNI_PATH;
- masquerading: reference ADD, our DEL, our ADD, reference DEL on one node -- the iptables rules
  must be the reference's, byte for byte, or the other side's DEL would leak them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests import fake_ipam
from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4
from tests.integration.test_bridge_common import (
    BRIDGE,
    ECHO_PORT,
    GW4,
    NETWORK,
    SUBNET4,
    Bench,
    bench,
    ping,
)
from tests.netns import Netns, PluginRun, echo_server, probe

__all__ = ["bench"]

REFERENCE = Path("/usr/lib/cni")


@pytest.fixture
def reference() -> Path:
    if not os.access(REFERENCE / "bridge", os.X_OK):
        pytest.skip("reference plugins not installed in /usr/lib/cni")
    return REFERENCE


def ref_call(bench: Bench, command: str, container: Any, config: dict[str, Any], cid: str,
             cni_path: str, prev: dict[str, Any] | None = None) -> PluginRun:
    if prev is not None:
        config = {**config, "prevResult": prev}
    return bench.runner(bench.host, str(REFERENCE / "bridge"), command, config,
                        container_id=cid, netns=container, cni_path=cni_path)


def test_foreign_ipam_is_delegated_every_verb(bench: Bench, tmp_path: Path) -> None:
    fake_dir = tmp_path / "fake"
    fake_ipam.install(fake_dir, "fake-ipam")
    log = tmp_path / "ipam.log"
    canned = {"ips": [{"address": "10.77.0.42/24", "gateway": GW4}],
              "routes": [{"dst": "192.0.2.0/24"}], "dns": {"nameservers": ["192.0.2.53"]}}
    cfg = bench.config("1.1.0", ipam=None)
    cfg["ipam"] = {"type": "fake-ipam", "log": str(log), "result": canned}
    path = f"{bench.plugin_dir}:{fake_dir}"
    c = bench.make_ns("C")
    args = "IgnoreUnknown=1;MAC=0a:58:0a:4d:00:2a"
    result = bench.add(c, cfg, cid="fx", args=args, cni_path=path)
    assert result["ips"] == [{"address": "10.77.0.42/24", "gateway": GW4, "interface": 2}]
    assert result["dns"] == {"nameservers": ["192.0.2.53"]}
    assert bench.addresses(c, "eth0") == ["10.77.0.42/24"]
    assert [r["gateway"] for r in c.ip_json("route", "show", "192.0.2.0/24")] == [GW4]
    assert ping(bench.host, "10.77.0.42") == {"10.77.0.42": True}

    bench.ok("CHECK", c, cfg, cid="fx", args=args, prev=result, cni_path=path)
    bench.ok("STATUS", None, cfg, cni_path=path)
    gc = {**cfg, "cni.dev/valid-attachments": [{"containerID": "fx", "ifname": "eth0"}]}
    bench.ok("GC", None, gc, cni_path=path)
    bench.ok("DEL", c, cfg, cid="fx", args=args, prev=result, cni_path=path)
    calls = fake_ipam.calls(log)
    assert [x["command"] for x in calls] == ["ADD", "CHECK", "STATUS", "GC", "DEL"]
    for x in (calls[0], calls[1], calls[4]):
        assert (x["containerId"], x["ifname"], x["netns"], x["args"]) == ("fx", "eth0", c.path,
                                                                          args)
    assert calls[1]["prevResult"] and calls[4]["prevResult"]
    assert bench.host_veths() == []


def test_our_bridge_with_reference_host_local(bench: Bench, reference: Path,
                                              tmp_path: Path) -> None:
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "ref-host-local").symlink_to(reference / "host-local")
    cfg = bench.config()
    cfg["ipam"]["type"] = "ref-host-local"
    path = f"{bench.plugin_dir}:{ref_dir}"
    c = bench.make_ns("C")
    result = bench.add(c, cfg, cni_path=path)
    assert result["ips"] == [{"address": "10.77.0.2/24", "gateway": GW4, "interface": 2}]
    assert bench.reservations() == {"10.77.0.2": "c1/eth0"}
    assert ping(c, GW4) == {GW4: True}
    bench.ok("CHECK", c, cfg, prev=result, cni_path=path)
    bench.ok("DEL", c, cfg, prev=result, cni_path=path)
    assert bench.reservations() == {}


def test_reference_bridge_with_our_host_local(bench: Bench, reference: Path) -> None:
    cfg = bench.config(isDefaultGateway=True)
    c = bench.make_ns("C")
    run = ref_call(bench, "ADD", c, cfg, "rc", str(bench.plugin_dir))
    assert run.rc == 0, run
    assert run.json["ips"][0]["address"] == "10.77.0.2/24"
    assert bench.reservations() == {"10.77.0.2": "rc/eth0"}
    assert ping(c, GW4) == {GW4: True}
    run = ref_call(bench, "DEL", c, cfg, "rc", str(bench.plugin_dir), prev=run.json)
    assert run.rc == 0, run
    assert bench.reservations() == {}


def masq_chain(cid: str) -> str:
    return "CNI-" + hashlib.sha512(f"{NETWORK}{cid}".encode()).hexdigest()[:24]


def expected_rules(ip: str, cid: str) -> list[str]:
    chain = masq_chain(cid)
    comment = f'-m comment --comment "name: \\"{NETWORK}\\" id: \\"{cid}\\""'
    return [f":{chain} -",
            f"-A POSTROUTING -s {ip}/32 {comment} -j {chain}",
            f"-A {chain} -d {SUBNET4} {comment} -j ACCEPT",
            f"-A {chain} ! -d 224.0.0.0/4 {comment} -j MASQUERADE"]


def test_masquerade_is_swappable_with_the_reference(bench: Bench, reference: Path,
                                                    outside_ns: Netns) -> None:
    cfg = bench.config(ipMasq=True, ipMasqBackend="iptables", isDefaultGateway=True)
    c = bench.make_ns("C")
    ref_path = str(reference)
    run = ref_call(bench, "ADD", c, cfg, "swap", ref_path)
    assert run.rc == 0, run
    assert sorted(bench.ipt_nat()) == sorted(expected_rules("10.77.0.2", "swap"))

    bench.ok("DEL", c, cfg, cid="swap", prev=run.json)  # ours removes the reference's rules
    assert bench.ipt_nat() == [] and bench.reservations() == {} and bench.host_veths() == []

    ours = bench.add(c, cfg, cid="swap")
    assert ours["ips"][0]["address"] == "10.77.0.3/24"  # its host-local cursor moved on
    assert sorted(bench.ipt_nat()) == sorted(expected_rules("10.77.0.3", "swap"))
    assert bench.nft_masq_comments() == []
    with echo_server(outside_ns, "tcp", ECHO_PORT) as server:
        assert probe(c, "tcp", O_ETH0_V4, ECHO_PORT).ok
    assert server.peer == H_UPLINK_V4
    run = ref_call(bench, "DEL", c, cfg, "swap", ref_path, prev=ours)
    assert run.rc == 0, run
    assert bench.ipt_nat() == [] and bench.reservations() == {}
    assert BRIDGE in bench.links(kind="bridge")
