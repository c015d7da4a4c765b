"""GC, STATUS, CHECK and DEL of our host-local executable (the reference has no GC/STATUS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_host_local_helpers import (
    HostLocal,
    addresses,
    netconf,
    ours,
    reservation_files,
    store_files,
)

__all__ = ["ours"]  # fixture


def conf(d: Path, version: str = "1.1.0") -> dict[str, object]:
    return netconf(d, version, subnet="10.71.0.0/29")


def test_gc_releases_what_is_not_listed(ours: HostLocal, tmp_path: Path) -> None:
    for cid in ("a", "b", "c"):
        addresses(ours("ADD", conf(tmp_path), cid=cid))
    keep = {**conf(tmp_path),
            "cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]}
    gc = ours("GC", keep, cid=None)
    assert gc.rc == 0 and gc.stdout == ""
    assert sorted(store_files(tmp_path)) == ["10.71.0.3", "last_reserved_ip.0", "lock"]


def test_status(ours: HostLocal, tmp_path: Path) -> None:
    assert ours("STATUS", conf(tmp_path), cid=None).rc == 0
    for n in range(5):
        addresses(ours("ADD", conf(tmp_path), cid=f"s{n}"))
    status = ours("STATUS", conf(tmp_path), cid=None)
    assert status.rc == 1 and status.json["code"] == 50
    assert status.json["msg"] == "range set 0 (10.71.0.1-10.71.0.6) is exhausted"


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_status_refused_below_110(ours: HostLocal, tmp_path: Path, command: str) -> None:
    config = {**conf(tmp_path, "1.0.0"), "cni.dev/valid-attachments": []}
    run = ours(command, config, cid=None)
    assert run.rc == 1 and run.json["code"] == 1
    assert run.json["msg"] == f"config version does not allow {command}"


def test_check_compares_prev_result(ours: HostLocal, tmp_path: Path) -> None:
    add = ours("ADD", conf(tmp_path))
    assert ours("CHECK", {**conf(tmp_path), "prevResult": add.json}).rc == 0
    other = {**add.json, "ips": [{"address": "10.71.0.6/29", "gateway": "10.71.0.1"}]}
    check = ours("CHECK", {**conf(tmp_path), "prevResult": other})
    assert check.rc == 1 and "differ from prevResult" in check.json["msg"]
    assert check.json["details"] == (
        "in prevResult but not reserved: 10.71.0.6; reserved but not in prevResult: 10.71.0.2"
    )


def test_del_twice_and_with_nothing_held(ours: HostLocal, tmp_path: Path) -> None:
    addresses(ours("ADD", conf(tmp_path)))
    assert ours("DEL", conf(tmp_path)).rc == 0
    assert ours("DEL", conf(tmp_path)).rc == 0
    assert ours("DEL", conf(tmp_path), cid="never-added").rc == 0
    assert reservation_files(tmp_path) == {}


def test_symlinked_data_dir_refused(ours: HostLocal, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    run = ours("ADD", conf(tmp_path / "link"))
    assert run.rc == 1 and "is a symbolic link; refusing" in run.json["msg"]
    assert list((tmp_path / "real").iterdir()) == []
