"""Differential tests: the same ADD/DEL sequence through ours and the reference (Debian 1.1.1)
gives the same addresses and byte-identical store files.

File modes are not compared: Debian 1.1.1 writes reservations and cursors 0644, ours (like the
reference since v1.4.0) 0600. Error *codes* differ where ours is more precise (config errors are
7, not 999); error *messages* of ours start with the reference's text (ours may add who holds a
requested address).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_host_local_helpers import (
    HostLocal,
    netconf,
    ours,
    reference,
    store_files,
)

__all__ = ["ours", "reference"]  # fixtures

Op = tuple[str, str, dict[str, Any]]  # (command, container ID, {ifname, args, extra config})


def replay(impl: HostLocal, data_dir: Path, conf: Callable[..., dict[str, Any]],
           ops: list[Op]) -> list[Any]:
    outcomes: list[Any] = []
    for command, cid, kw in ops:
        config = conf(data_dir, **kw.get("config", {}))
        run = impl(command, config, cid=cid, ifname=kw.get("ifname", "eth0"),
                   args=kw.get("args", ""))
        if run.rc == 0:
            doc = run.json or {}
            outcomes.append(("ok", [(i["address"], i.get("gateway")) for i in doc.get("ips", [])],
                             doc.get("routes")))
        else:
            outcomes.append(("error", run.json["msg"]))
    return outcomes


def assert_same(ours_impl: HostLocal, ref_impl: HostLocal, tmp_path: Path,
                conf: Callable[..., dict[str, Any]], ops: list[Op]) -> list[Any]:
    got = replay(ours_impl, tmp_path / "ours", conf, ops)
    want = replay(ref_impl, tmp_path / "ref", conf, ops)
    for op, g, w in zip(ops, got, want, strict=True):
        if w[0] == "error":
            assert g[0] == "error" and g[1].startswith(w[1]), (op, g, w)
        else:
            assert g == w, op
    assert store_files(tmp_path / "ours") == store_files(tmp_path / "ref")
    return got


def adds(*cids: str) -> list[Op]:
    return [("ADD", c, {}) for c in cids]


def dels(*cids: str) -> list[Op]:
    return [("DEL", c, {}) for c in cids]


def single(d: Path, **kw: Any) -> dict[str, Any]:
    return netconf(d, subnet="10.41.0.0/24", routes=[{"dst": "0.0.0.0/0"}], **kw)


def test_single_range(ours: HostLocal, reference: HostLocal, tmp_path: Path) -> None:
    got = assert_same(ours, reference, tmp_path, single,
                      adds("a", "b", "c") + dels("b") + adds("d", "b") + dels("a", "a"))
    assert [o[1][0][0] for o in got if o[0] == "ok" and o[1]] == [
        "10.41.0.2/24", "10.41.0.3/24", "10.41.0.4/24", "10.41.0.5/24", "10.41.0.6/24"]


def test_range_start_end(ours: HostLocal, reference: HostLocal, tmp_path: Path) -> None:
    def conf(d: Path) -> dict[str, Any]:
        return netconf(d, subnet="10.42.0.0/24", rangeStart="10.42.0.100",
                       rangeEnd="10.42.0.102", gateway="10.42.0.101")
    got = assert_same(ours, reference, tmp_path, conf,
                      adds("a", "b", "c") + dels("a") + adds("d"))
    assert got[2][0] == "error" and got[4][1][0][0] == "10.42.0.100/24"


def test_several_ranges_in_a_set(ours: HostLocal, reference: HostLocal, tmp_path: Path) -> None:
    def conf(d: Path) -> dict[str, Any]:
        return netconf(d, ranges=[[{"subnet": "10.43.0.0/30"},
                                   {"subnet": "10.43.1.0/29", "rangeStart": "10.43.1.5"}]])
    assert_same(ours, reference, tmp_path, conf,
                adds("a", "b", "c") + dels("a", "c") + adds("d", "e", "f"))


def test_dual_stack(ours: HostLocal, reference: HostLocal, tmp_path: Path) -> None:
    def conf(d: Path) -> dict[str, Any]:
        return netconf(d, ranges=[[{"subnet": "10.44.0.0/29"}], [{"subnet": "fd00:44::/125"}]],
                       routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
    assert_same(ours, reference, tmp_path, conf,
                adds("a", "b") + dels("a") + adds("c") + [("ADD", "b", {"ifname": "eth1"})])


def test_requested_ips(ours: HostLocal, reference: HostLocal, tmp_path: Path) -> None:
    def conf(d: Path, **kw: Any) -> dict[str, Any]:
        return netconf(d, ranges=[[{"subnet": "10.45.0.0/24"}], [{"subnet": "fd00:45::/64"}]],
                       **kw)
    ops: list[Op] = [
        ("ADD", "a", {"args": "IP=10.45.0.50"}),
        ("ADD", "b", {"args": "IP=10.45.0.50"}),  # taken
        ("ADD", "c", {"args": "IP=10.45.0.1"}),  # gateway
        ("ADD", "d", {"config": {"args": {"cni": {"ips": ["10.45.0.60", "fd00:45::60"]}}}}),
        ("ADD", "e", {"config": {"runtimeConfig": {"ips": ["fd00:45::70/64"]}}}),
        ("ADD", "f", {"args": "IP=10.99.0.1"}),  # in no range set: rolled back
        ("ADD", "g", {}),  # round robin continues after the last reserved address
    ]
    got = assert_same(ours, reference, tmp_path, conf, ops)
    assert "held by container a ifname eth0" in got[1][1]


def test_exhaustion_release_then_wrap(ours: HostLocal, reference: HostLocal,
                                      tmp_path: Path) -> None:
    def conf(d: Path) -> dict[str, Any]:
        return netconf(d, subnet="10.46.0.0/29")
    got = assert_same(ours, reference, tmp_path, conf,
                      adds("a", "b", "c", "d", "e", "f") + dels("c") + adds("g", "h"))
    assert got[5][0] == "error" and got[7][1][0][0] == "10.46.0.4/29"


def test_range_set_order_with_runtime_ranges(ours: HostLocal, reference: HostLocal,
                                             tmp_path: Path) -> None:
    def conf(d: Path) -> dict[str, Any]:
        return netconf(d, subnet="10.47.1.0/29", ranges=[[{"subnet": "10.47.2.0/29"}]],
                       runtimeConfig={"ipRanges": [[{"subnet": "10.47.0.0/29"}]]})
    assert_same(ours, reference, tmp_path, conf, adds("a", "b") + dels("a") + adds("c"))


GOLDEN = Path(__file__).resolve().parents[1] / "data" / "host_local" / "config"
REFERENCE_CASES = [p for p in sorted(GOLDEN.glob("*.json"))
                   if json.loads(p.read_text()).get("reference")]


@pytest.mark.parametrize("path", REFERENCE_CASES, ids=[p.stem for p in REFERENCE_CASES])
def test_config_error_messages_match_the_reference(
    ours: HostLocal, reference: HostLocal, tmp_path: Path, path: Path
) -> None:
    case = json.loads(path.read_text())
    config = case["config"]
    if isinstance(config.get("ipam"), dict):
        config["ipam"]["dataDir"] = str(tmp_path)
    ref, mine = reference("ADD", config), ours("ADD", config)
    assert ref.rc == mine.rc == 1
    assert mine.json["msg"] == ref.json["msg"] == case["error"]["msg"]
