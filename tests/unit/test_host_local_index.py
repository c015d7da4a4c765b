"""The reservation index: served while the store directory is as we left it, rebuilt by a scan
when anything else changed it (the reference plugin, an operator, a killed call)."""

from __future__ import annotations

import errno
import json
import os
from ipaddress import ip_address
from pathlib import Path

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.ipam.host_local import index
from cni_bridge.ipam.host_local.config import StoreLocation
from cni_bridge.ipam.host_local.file_store import FileStore
from cni_bridge.ipam.host_local.store import Owner
from tests.unit.conftest import netdir

A, B, C = ip_address("10.88.0.2"), ip_address("10.88.0.3"), ip_address("10.88.0.4")


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the reservation/cursor files the store opens for reading."""
    reads: list[str] = []
    original = FileStore._read

    def spy(self: FileStore, name: str) -> bytes | None:
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(FileStore, "_read", spy)
    return reads


def reserve(store: FileStore, ip: object, cid: str) -> None:
    with store.locked():
        store.reservations()
        assert store.reserve(ip, Owner(cid, "eth0"), 0)  # type: ignore[arg-type]


def holders(store: FileStore) -> dict[object, Owner]:
    with store.locked():
        return dict(store.reservations())


def test_a_session_writes_the_index_and_stamps_the_directory(
    store: FileStore, tmp_path: Path
) -> None:
    reserve(store, A, "c1")
    st = netdir(tmp_path).stat()
    path = Path(index.index_path(st))
    doc = json.loads(path.read_text())
    assert doc["stamp"] == st.st_mtime_ns
    assert doc["reservations"] == {"10.88.0.2": ["c1", "eth0"]}
    assert path.is_relative_to(Path(os.environ["CNI_BRIDGE_STATE_DIR"]))
    # The store itself holds only the reference's files.
    assert sorted(os.listdir(netdir(tmp_path))) == ["10.88.0.2", "last_reserved_ip.0", "lock"]


def test_the_next_session_reads_no_reservation_file(
    store: FileStore, file_reads: list[str]
) -> None:
    reserve(store, A, "c1")
    reserve(store, B, "c2")
    file_reads.clear()
    assert holders(store) == {A: Owner("c1", "eth0"), B: Owner("c2", "eth0")}
    assert store.addresses_held("c2", "eth0") == (B,)
    assert file_reads == []


def test_a_file_created_behind_our_back_is_seen(
    store: FileStore, tmp_path: Path, file_reads: list[str]
) -> None:
    reserve(store, A, "c1")
    (netdir(tmp_path) / "10.88.0.4").write_bytes(b"ref\r\neth0")  # the reference's ADD
    file_reads.clear()
    assert holders(store) == {A: Owner("c1", "eth0"), C: Owner("ref", "eth0")}
    assert "10.88.0.4" in file_reads  # a scan
    file_reads.clear()
    assert holders(store)[C] == Owner("ref", "eth0")
    assert file_reads == []  # rebuilt: the index serves again


def test_a_file_removed_behind_our_back_is_seen(store: FileStore, tmp_path: Path) -> None:
    reserve(store, A, "c1")
    reserve(store, B, "c2")
    (netdir(tmp_path) / "10.88.0.2").unlink()  # the reference's DEL
    assert holders(store) == {B: Owner("c2", "eth0")}
    assert store.addresses_held("c1", "eth0") == ()


def test_a_replaced_file_with_another_owner_is_seen(store: FileStore, tmp_path: Path) -> None:
    reserve(store, A, "c1")
    path = netdir(tmp_path) / "10.88.0.2"
    path.unlink()
    path.write_bytes(b"other\r\neth1")
    assert holders(store) == {A: Owner("other", "eth1")}


@pytest.mark.parametrize("damage", ["garbage", "empty", "other-format", "missing"])
def test_a_damaged_or_missing_index_means_a_scan(
    store: FileStore, tmp_path: Path, damage: str, file_reads: list[str]
) -> None:
    reserve(store, A, "c1")
    path = Path(index.index_path(netdir(tmp_path).stat()))
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "empty":
        path.write_text("")
    elif damage == "other-format":
        doc = json.loads(path.read_text())
        path.write_text(json.dumps(doc | {"format": 99}))
    else:
        path.unlink()
    file_reads.clear()
    assert holders(store) == {A: Owner("c1", "eth0")}
    assert "10.88.0.2" in file_reads  # scanned: the index was not trusted


def test_a_session_killed_before_the_index_was_written_means_a_scan(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserve(store, A, "c1")
    with monkeypatch.context() as m:
        m.setattr(index, "save", lambda fd, reservations: None)  # killed before saving
        reserve(store, B, "c2")
        with store.locked():
            store.release(A)
    assert holders(store) == {B: Owner("c2", "eth0")}


def test_a_failed_session_saves_no_index(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's file is linked, then its cursor write fails: the index, made stale by A's
    reservation earlier in the session, must not be saved without B."""
    real_replace = FileStore._replace

    def disk_full_for_set_1(self: FileStore, name: str, data: bytes) -> None:
        if name == "last_reserved_ip.1":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(self, name, data)

    with monkeypatch.context() as m:
        m.setattr(FileStore, "_replace", disk_full_for_set_1)
        with pytest.raises(CniError), store.locked():
            store.reservations()
            assert store.reserve(A, Owner("c1", "eth0"), 0)
            store.reserve(B, Owner("c1", "eth0"), 1)
    with store.locked():
        assert store.held("c1", "eth0") == (A, B)  # B is on disk, so DEL frees it


def test_an_unwritable_state_dir_costs_a_scan_not_the_call(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(blocker))
    reserve(store, A, "c1")
    assert holders(store) == {A: Owner("c1", "eth0")}


def test_an_index_under_another_state_root_is_never_trusted(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls made with and without CNI_BRIDGE_STATE_DIR keep two indexes of one store: each
    save stamps the directory uniquely, so the one not written last never matches."""
    reserve(store, A, "c1")  # index under root 1
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "root2"))
    reserve(store, B, "c2")  # index under root 2, in the same second
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "cni-bridge-state"))
    with store.locked():
        store.release(A)  # root 1's index is stale: this session scans
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "root2"))
    assert holders(store) == {B: Owner("c2", "eth0")}


def test_a_filesystem_with_coarse_timestamps_gets_no_index(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_reads: list[str]
) -> None:
    real_utime = os.utime

    def whole_seconds(path: object, ns: tuple[int, int]) -> None:
        real_utime(path, ns=(ns[0] // 10**9 * 10**9, ns[1] // 10**9 * 10**9))  # type: ignore

    monkeypatch.setattr(index.os, "utime", whole_seconds)
    reserve(store, A, "c1")
    assert not Path(index.index_path(netdir(tmp_path).stat())).exists()
    file_reads.clear()
    assert holders(store) == {A: Owner("c1", "eth0")}
    assert "10.88.0.2" in file_reads  # scanned


def test_a_store_made_again_at_the_same_inode_is_scanned(
    store: FileStore, tmp_path: Path, file_reads: list[str]
) -> None:
    """A data directory removed and made again may get the old one's inode number (and so its
    index's name): the old stamp is a time before the new directory existed, never its mtime.
    The inode reuse is made certain here by moving the old index to the new directory's key."""
    reserve(store, A, "c1")
    old_dir = netdir(tmp_path).stat()
    old_index = Path(index.index_path(old_dir))
    store.close()
    for f in netdir(tmp_path).iterdir():
        f.unlink()
    netdir(tmp_path).rmdir()
    again = FileStore.open(StoreLocation(str(tmp_path / "data"), "net1"), create=True)
    assert again is not None
    with again:
        (netdir(tmp_path) / "10.88.0.3").write_bytes(b"c9\r\neth0")  # the reference's format
        new_dir = netdir(tmp_path).stat()
        doc = json.loads(old_index.read_text())
        doc["dir"] = [new_dir.st_dev, new_dir.st_ino]
        Path(index.index_path(new_dir)).write_text(json.dumps(doc))
        file_reads.clear()
        assert holders(again) == {B: Owner("c9", "eth0")}
        assert "10.88.0.3" in file_reads  # scanned, the old index not trusted
