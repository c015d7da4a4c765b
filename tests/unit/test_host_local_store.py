"""FileStore on temporary directories: the byte format shared with the reference, legacy files,
atomic creation, stale temporaries, symlink refusal, the bounded lock wait, GC."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from ipaddress import ip_address
from pathlib import Path

import pytest

from cni_bridge.cni.errors import IO_FAILURE, CniError, ConfigError, TryAgainError
from cni_bridge.ipam.host_local.config import StoreLocation
from cni_bridge.ipam.host_local.file_store import FileStore
from cni_bridge.ipam.host_local.service import Attachment, remove_allocation, remove_unlisted
from cni_bridge.ipam.host_local.store import (
    TEMP_PREFIX,
    Owner,
    decode_owner,
    encode_owner,
    reservation_ip,
)
from tests.unit.conftest import netdir


def test_layout_and_bytes(store: FileStore, tmp_path: Path) -> None:
    with store.locked():
        assert store.reserve(ip_address("10.88.0.2"), Owner("abc123", "eth0"), 0)
        assert store.reserve(ip_address("fd00::2"), Owner("abc123", "eth0"), 1)
    d = netdir(tmp_path)
    assert sorted(os.listdir(d)) == [
        "10.88.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"
    ]
    assert (d / "10.88.0.2").read_bytes() == b"abc123\r\neth0"  # 12 bytes, no newline
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.88.0.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"fd00::2"
    assert stat.S_IMODE((d / "10.88.0.2").stat().st_mode) == 0o600
    assert (d / "lock").stat().st_size == 0
    assert stat.S_IMODE(d.stat().st_mode) == 0o755 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_reserve_is_exclusive(store: FileStore) -> None:
    ip = ip_address("10.0.0.5")
    with store.locked():
        assert store.reserve(ip, Owner("a", "eth0"), 0)
        assert not store.reserve(ip, Owner("b", "eth0"), 0)
        assert store.reservations() == {ip: Owner("a", "eth0")}
        assert store.last_reserved(0) == ip


def test_reads_reference_and_legacy_files_leniently(store: FileStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    (d / "10.0.0.2").write_bytes(b"abc\r\neth0")
    (d / "10.0.0.3").write_bytes(b"legacy-id\n")  # written before ifname was recorded
    (d / "10.0.0.4").write_bytes(b"")  # a crash of the reference between create and write
    (d / "not-an-ip").write_bytes(b"abc\r\neth0")
    (d / "010.0.0.5").write_bytes(b"x")  # not canonical: not a reservation
    (d / "subdir").mkdir()
    with store.locked():
        assert store.reservations() == {
            ip_address("10.0.0.2"): Owner("abc", "eth0"),
            ip_address("10.0.0.3"): Owner("legacy-id", None),
            ip_address("10.0.0.4"): Owner("", None),
        }
    assert store.addresses_held("legacy-id", "eth9") == (ip_address("10.0.0.3"),)
    assert store.addresses_held("abc", "eth0") == (ip_address("10.0.0.2"),)


def test_owner_codec() -> None:
    assert encode_owner(Owner(" abc ", "eth0")) == b"abc\r\neth0"
    assert encode_owner(Owner("abc", None)) == b"abc"
    assert decode_owner(b"  abc\r\neth0\n") == Owner("abc", "eth0")
    assert decode_owner(b"abc\r\n") == Owner("abc", None)
    assert reservation_ip("fd00:0::1") is None and reservation_ip("fe80::1%eth0") is None
    assert reservation_ip("fd00::1") == ip_address("fd00::1")


def test_release_is_tolerant_and_del_leaves_lock_and_cursors(
    store: FileStore, tmp_path: Path
) -> None:
    with store.locked():
        store.reserve(ip_address("10.0.0.2"), Owner("a", "eth0"), 0)
        store.release(ip_address("10.0.0.2"))
        store.release(ip_address("10.0.0.2"))
    assert remove_allocation(store, Attachment("a", "eth0")) == ()
    assert sorted(os.listdir(netdir(tmp_path))) == ["last_reserved_ip.0", "lock"]


def test_stale_temporaries_are_removed_under_the_lock(store: FileStore, tmp_path: Path) -> None:
    stale = netdir(tmp_path) / f"{TEMP_PREFIX}12345-abcdef"
    stale.write_bytes(b"abc\r\n")  # a run killed mid-write
    with store.locked():
        assert not stale.exists()
        assert store.reservations() == {}


def test_no_temporary_survives_a_reservation(store: FileStore, tmp_path: Path) -> None:
    with store.locked():
        for n in range(2, 10):
            store.reserve(ip_address(f"10.0.0.{n}"), Owner("c", f"eth{n}"), 0)
    assert not [n for n in os.listdir(netdir(tmp_path)) if n.startswith(TEMP_PREFIX)]


def test_missing_store_is_not_created_without_create(tmp_path: Path) -> None:
    assert FileStore.open(StoreLocation(str(tmp_path / "nope"), "n"), create=False) is None
    assert not (tmp_path / "nope").exists()


def test_symlinked_data_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link; refusing"):
        FileStore.open(StoreLocation(str(tmp_path / "link"), "n"), create=True)
    assert list(real.iterdir()) == []


def test_symlinked_network_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "n").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="IPAM store directory .* is a symbolic link"):
        FileStore.open(StoreLocation(str(tmp_path / "data"), "n"), create=True)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", ".hidden"])
def test_network_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        FileStore.open(StoreLocation(str(tmp_path), name), create=True)


def test_planted_symlink_is_not_followed(store: FileStore, tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"secret")
    (netdir(tmp_path) / "10.0.0.7").symlink_to(target)
    (netdir(tmp_path) / "last_reserved_ip.0").symlink_to(target)
    with store.locked():
        assert store.reservations() == {ip_address("10.0.0.7"): Owner("", None)}
        assert not store.reserve(ip_address("10.0.0.7"), Owner("a", "eth0"), 0)
        assert store.last_reserved(0) is None
        assert store.reserve(ip_address("10.0.0.8"), Owner("a", "eth0"), 0)
    assert target.read_bytes() == b"secret"
    assert not (netdir(tmp_path) / "last_reserved_ip.0").is_symlink()  # replaced, not followed


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path), "n")
    store = FileStore.open(location, create=True, lock_timeout=0.3)
    assert store is not None
    lock_path = tmp_path / "n" / "lock"
    with store.locked():
        pass
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # someone else (the reference, say) holds it
        start = time.monotonic()
        with pytest.raises(TryAgainError) as info, store.locked():
            pass
        assert 0.25 < time.monotonic() - start < 2
        assert info.value.code == 11 and str(lock_path) in info.value.msg
    finally:
        os.close(fd)
        store.close()


def test_lock_is_reentrant(store: FileStore) -> None:
    with store.locked(), store.locked():
        assert store.addresses_held("x", "eth0") == ()


def test_use_without_lock_is_a_bug(store: FileStore) -> None:
    with pytest.raises(AssertionError):
        store.reservations()


def test_unwritable_store_is_an_io_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(CniError) as info:
        FileStore.open(StoreLocation(str(tmp_path / "ro"), "n"), create=True)
    assert info.value.code == IO_FAILURE


def test_gc_releases_unlisted_and_keeps_lock_and_cursors(store: FileStore, tmp_path: Path) -> None:
    d = netdir(tmp_path)
    with store.locked():
        store.reserve(ip_address("10.0.0.2"), Owner("keep", "eth0"), 0)
        store.reserve(ip_address("10.0.0.3"), Owner("keep", "eth1"), 0)
        store.reserve(ip_address("10.0.0.4"), Owner("gone", "eth0"), 0)
        store.reserve(ip_address("10.0.0.5"), Owner("keep", None), 0)  # legacy, ID listed
        store.reserve(ip_address("10.0.0.6"), Owner("old", None), 0)  # legacy, ID not listed
    (d / "10.0.0.7").write_bytes(b"")  # empty file from a crashed reference run
    (d / "stray").write_bytes(b"gone\r\neth0")  # not an address: never touched
    released = remove_unlisted(store, {("keep", "eth0")})
    assert [str(ip) for ip in released] == ["10.0.0.3", "10.0.0.4", "10.0.0.6", "10.0.0.7"]
    assert sorted(os.listdir(d)) == ["10.0.0.2", "10.0.0.5", "last_reserved_ip.0", "lock", "stray"]


def test_check_usable(store: FileStore) -> None:
    store.check_usable()


def test_dangling_symlink_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a symbolic link; refusing"):
        FileStore.open(StoreLocation(str(tmp_path / "dangling"), "n"), create=True)
    assert not (tmp_path / "nowhere").exists()
