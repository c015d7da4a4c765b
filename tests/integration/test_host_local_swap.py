"""Swapping implementations on a live store: reserve with one, release or check with the other,
and both allocating concurrently on one store (they share the flock on `lock`)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_host_local_helpers import (
    HostLocal,
    addresses,
    finish,
    netconf,
    ours,
    reference,
    reservation_files,
    spawn,
)

__all__ = ["ours", "reference"]  # fixtures


def conf(d: Path) -> dict[str, object]:
    return netconf(d, ranges=[[{"subnet": "10.51.0.0/26"}], [{"subnet": "fd00:51::/122"}]])


def test_reference_reserves_ours_releases_and_continues(
    ours: HostLocal, reference: HostLocal, tmp_path: Path
) -> None:
    assert addresses(reference("ADD", conf(tmp_path), cid="a")) \
        == ["10.51.0.2/26", "fd00:51::2/122"]
    assert addresses(reference("ADD", conf(tmp_path), cid="b")) \
        == ["10.51.0.3/26", "fd00:51::3/122"]
    assert ours("CHECK", conf(tmp_path), cid="a").rc == 0
    assert ours("DEL", conf(tmp_path), cid="a").rc == 0
    assert sorted(reservation_files(tmp_path)) == ["10.51.0.3", "fd00:51::3"]
    # Ours continues the reference's round robin from its cursor files.
    assert addresses(ours("ADD", conf(tmp_path), cid="c")) == ["10.51.0.4/26", "fd00:51::4/122"]
    assert ours("DEL", conf(tmp_path), cid="b").rc == 0
    assert reference("CHECK", conf(tmp_path), cid="c").rc == 0


def test_ours_reserves_reference_releases_and_continues(
    ours: HostLocal, reference: HostLocal, tmp_path: Path
) -> None:
    assert addresses(ours("ADD", conf(tmp_path), cid="a")) == ["10.51.0.2/26", "fd00:51::2/122"]
    assert addresses(ours("ADD", conf(tmp_path), cid="b", ifname="net1")) \
        == ["10.51.0.3/26", "fd00:51::3/122"]
    assert reference("CHECK", conf(tmp_path), cid="a").rc == 0
    dup = reference("ADD", conf(tmp_path), cid="a")  # the reference sees our reservation
    assert dup.rc == 1 and "duplicate allocation is not allowed" in dup.json["msg"]
    assert reference("DEL", conf(tmp_path), cid="a").rc == 0
    assert reference("DEL", conf(tmp_path), cid="b", ifname="net1").rc == 0
    assert reservation_files(tmp_path) == {}
    assert addresses(reference("ADD", conf(tmp_path), cid="c")) \
        == ["10.51.0.4/26", "fd00:51::4/122"]


def test_legacy_files_released_by_ours(ours: HostLocal, tmp_path: Path) -> None:
    store = tmp_path / "hl"
    store.mkdir()
    (store / "10.51.0.9").write_bytes(b"old-container")  # written before ifname was recorded
    assert ours("DEL", conf(tmp_path), cid="old-container", ifname="eth3").rc == 0
    assert not (store / "10.51.0.9").exists()


def test_mixed_concurrent_adds_never_duplicate(
    ours: HostLocal, reference: HostLocal, plugin_dir: Path, tmp_path: Path
) -> None:
    config = conf(tmp_path)
    procs = []
    for n in range(20):
        impl = ours if n % 2 else reference
        procs.append((f"m{n}", spawn(impl.argv(plugin_dir, "ADD", f"m{n}"), config)))
    results = {cid: finish(p) for cid, p in procs}
    assert all(rc == 0 for rc, _ in results.values()), results
    v4 = [doc["ips"][0]["address"] for _, doc in results.values()]
    v6 = [doc["ips"][1]["address"] for _, doc in results.values()]
    assert len(set(v4)) == len(set(v6)) == 20
    files = reservation_files(tmp_path)
    assert len(files) == 40
    for cid, (_, doc) in results.items():
        for ip in doc["ips"]:
            assert files[ip["address"].split("/")[0]] == f"{cid}\r\neth0".encode()
