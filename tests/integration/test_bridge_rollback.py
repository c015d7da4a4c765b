"""A failed ADD leaves nothing behind: no reservation, no host veth, no masquerade entry, no
spoof-check chain, nothing in the container (TESTING.md §5 B 16-18).

Failures are real where the kernel can produce them (ifname taken, unreachable route gateway,
missing netns) and injected otherwise: the fault launcher makes one named function raise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import fake_ipam
from tests.integration.test_bridge_common import NETWORK, Bench, bench
from tests.netns import Netns

__all__ = ["bench"]


def assert_nothing_left(bench: Bench, c: Netns | None) -> None:
    assert bench.reservations() == {}
    assert bench.host_veths() == []
    assert bench.masq_state() == []
    spoof = bench.host.run("nft", "list", "table", "bridge", "nat", check=False).stdout
    assert "cni-br-iface" not in spoof
    if c is not None:
        assert list(bench.links(c)) == ["lo"]


def test_container_ifname_taken(bench: Bench) -> None:
    c = bench.make_ns("C")
    c.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    err = bench.fails("ADD", c, bench.config(ipMasq=True))
    assert "eth0" in err["text"] and "already exists" in err["text"], err
    assert bench.reservations() == {} and bench.host_veths() == [] and bench.masq_state() == []
    assert sorted(bench.links(c)) == ["eth0", "lo", "other0"]  # the container's own, untouched


def test_bad_host_local_config_touches_nothing(bench: Bench) -> None:
    """host-local runs first (in-process, it needs no interface): its refusal comes before the
    bridge or any veth exists."""
    c = bench.make_ns("C")
    cfg = bench.config(ipMasq=True)
    cfg["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/24", "rangeStart": "10.78.0.5"}]]
    err = bench.fails("ADD", c, cfg)
    assert "10.78.0.5" in err["text"], err
    assert list(bench.links()) == ["lo"] and list(bench.links(c)) == ["lo"]
    assert_nothing_left(bench, c)


def test_netns_missing(bench: Bench) -> None:
    err = bench.fails("ADD", "/run/netns/cnit-no-such-ns", bench.config(ipMasq=True))
    assert "/run/netns/cnit-no-such-ns" in err["text"], err
    assert list(bench.links()) == ["lo"]
    assert_nothing_left(bench, None)


@pytest.mark.parametrize(("backend", "fail_at"), [
    ("nftables", "cni_bridge.bridge.addressing.configure_container"),
    ("nftables", "cni_bridge.net.links.wait_link_oper_up"),   # after masquerade: the last step
    ("iptables", "cni_bridge.net.links.wait_link_oper_up"),
])
def test_injected_failure_after_ipam(bench: Bench, backend: str, fail_at: str) -> None:
    cfg = bench.config(ipMasq=True, ipMasqBackend=backend, macspoofchk=True,
                       isDefaultGateway=True)
    c = bench.make_ns("C")
    run = bench.call("ADD", c, cfg, fail_at=fail_at)
    assert run.rc != 0 and f"injected failure at {fail_at}" in run.json["msg"], run
    assert_nothing_left(bench, c)
    # The same container then attaches normally (round robin: the next address, not .2).
    result = bench.add(c, cfg)
    assert result["ips"][0]["address"] == "10.77.0.3/24"
    assert bench.reservations() == {"10.77.0.3": "c1/eth0"}


def fake_config(bench: Bench, log: Path, result: dict[str, Any], **ipam: Any) -> dict[str, Any]:
    cfg = bench.config(ipam=None, ipMasq=True, macspoofchk=True)
    cfg["ipam"] = {"type": "fake-ipam", "log": str(log), "result": result, **ipam}
    return cfg


@pytest.fixture
def fake_path(bench: Bench, tmp_path: Path) -> str:
    fake_ipam.install(tmp_path / "fake", "fake-ipam")
    return f"{bench.plugin_dir}:{tmp_path / 'fake'}"


def test_failing_step_after_a_foreign_ipam_releases_it(bench: Bench, tmp_path: Path,
                                                        fake_path: str) -> None:
    log = tmp_path / "ipam.log"
    # A route whose gateway is not on any connected network: the kernel refuses it.
    result = {"ips": [{"address": "10.77.0.50/24", "gateway": "10.77.0.1"}],
              "routes": [{"dst": "192.0.2.0/24", "gw": "203.0.113.1"}]}
    c = bench.make_ns("C")
    err = bench.fails("ADD", c, fake_config(bench, log, result), cni_path=fake_path)
    assert "192.0.2.0/24" in err["text"], err
    assert [(x["command"], x["containerId"], x["ifname"]) for x in fake_ipam.calls(log)] == [
        ("ADD", "c1", "eth0"), ("DEL", "c1", "eth0")]
    assert_nothing_left(bench, c)


def test_ipam_without_addresses_is_released(bench: Bench, tmp_path: Path,
                                             fake_path: str) -> None:
    log = tmp_path / "ipam.log"
    c = bench.make_ns("C")
    err = bench.fails("ADD", c, fake_config(bench, log, {"ips": []}), cni_path=fake_path)
    assert "IPAM plugin returned missing IP config" in err["text"], err
    assert [x["command"] for x in fake_ipam.calls(log)] == ["ADD", "DEL"]
    assert_nothing_left(bench, c)


def test_rollback_survives_a_failing_ipam_del(bench: Bench, tmp_path: Path,
                                              fake_path: str) -> None:
    """The original error is reported even when releasing the address fails too."""
    log = tmp_path / "ipam.log"
    c = bench.make_ns("C")
    cfg = fake_config(bench, log, {"ips": []}, fail=["DEL"])
    err = bench.fails("ADD", c, cfg, cni_path=fake_path)
    assert "IPAM plugin returned missing IP config" in err["text"], err
    assert [x["command"] for x in fake_ipam.calls(log)] == ["ADD", "DEL"]
    assert bench.host_veths() == [] and list(bench.links(c)) == ["lo"]
    assert cfg["name"] == NETWORK
