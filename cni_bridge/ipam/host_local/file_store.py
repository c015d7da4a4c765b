"""The on-disk Store, byte-compatible with the reference host-local (layout in ``store.py``).

Better than the reference without changing what is on disk: a reservation is written to an
fsynced temporary and hard-linked to its name (fails if it exists, like ``O_EXCL``), so it is
never seen empty or partial; every path is opened below an ``O_NOFOLLOW`` directory descriptor
(no name or planted symlink escapes ``<dataDir>/<network>/``); the lock wait is bounded (code
11); who holds what comes from ``index.py`` while the directory is as we left it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager

from cni_bridge.cni.env import valid_name
from cni_bridge.cni.errors import IO_FAILURE, CniError, ConfigError, TryAgainError
from cni_bridge.cni.result import IPAddress
from cni_bridge.ipam.host_local import index, store
from cni_bridge.ipam.host_local.config import StoreLocation

LOCK_TIMEOUT = 10.0  # seconds
MAX_FILE = 4096  # a reservation or cursor file is a few dozen bytes; bound what we read
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# link() errors of filesystems without hard links: fall back to the reference's O_EXCL create.
_NO_LINK_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def io_error(what: str, exc: OSError) -> CniError:
    return CniError(f"{what}: {exc.strerror or exc}", code=IO_FAILURE)


@contextmanager
def translate_os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise io_error(what, exc) from None


class FileStore:
    """Reservations of one network under ``<dataDir>/<network>/``. Use as a context manager."""

    def __init__(self, dir_fd: int, path: str, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self._fd = dir_fd
        self.path = path
        self.lock_timeout = lock_timeout
        self._depth = 0
        self._dirty = False
        # From the index or one scan per lock session; only we change it while we hold the lock.
        self._cache: dict[str, store.Owner] | None = None
        self._index_current = False  # the index already says what _cache says

    @classmethod
    def open(
        cls, location: StoreLocation, *, create: bool, lock_timeout: float = LOCK_TIMEOUT
    ) -> FileStore | None:
        """Open (with `create`: make) the network's directory; None if it is absent."""
        network = location.network
        if not valid_name(network):
            raise ConfigError("invalid network name for the IPAM store", repr(network))
        data_dir = location.data_dir
        path = os.path.join(data_dir, network)
        if create:
            _refuse_symlink(data_dir, "ipam.dataDir")  # before makedirs trips over it
            with translate_os_errors(f"cannot create IPAM data dir {data_dir}"):
                os.makedirs(data_dir, store.DIR_MODE, exist_ok=True)
        parent = _open_dir(data_dir, None, "ipam.dataDir")
        if parent is None:
            return None
        try:
            if create:
                with translate_os_errors(f"cannot create IPAM store {path}"), \
                        contextlib.suppress(FileExistsError):
                    os.mkdir(network, store.DIR_MODE, dir_fd=parent)
            fd = _open_dir(network, parent, "the IPAM store directory", path)
        finally:
            os.close(parent)
        return None if fd is None else cls(fd, path, lock_timeout)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_usable(self) -> None:
        """Raise unless ADD could write here (read-only filesystem, no space, no permission)."""
        with translate_os_errors(f"cannot inspect {self.path}"):
            fs = os.fstatvfs(self._fd)
        if fs.f_flag & os.ST_RDONLY:
            raise CniError(f"IPAM store {self.path} is on a read-only filesystem", code=IO_FAILURE)
        if fs.f_bavail == 0 or fs.f_favail == 0:
            raise CniError(f"IPAM store {self.path} has no free space or inodes", code=IO_FAILURE)
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise CniError(f"IPAM store {self.path} is not writable", code=IO_FAILURE)
        with self.locked():
            pass  # the lock file can be created and locked

    @contextmanager
    def locked(self) -> Iterator[None]:
        if self._depth:  # re-entrant: flock would block on a second descriptor of ours
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        lock_path = os.path.join(self.path, store.LOCK_FILE)
        with translate_os_errors(f"cannot open lock file {lock_path}"):
            fd = os.open(store.LOCK_FILE, os.O_CREAT | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         store.LOCK_MODE, dir_fd=self._fd)
        try:
            self._acquire(fd, lock_path)
            self._depth = 1
            try:
                self._cache = index.load(self._fd)
                self._index_current = self._cache is not None
                if self._cache is None:
                    # Temporaries die with their session; a matching index proves none was
                    # left (a killed session changed the directory after the stamp).
                    self._remove_temporaries()
                yield
            except BaseException:
                # A failed change (say the cursor write after the link) may have left the disk
                # ahead of the cache: save nothing, and the next session scans.
                self._cache = None
                raise
            finally:
                self._depth = 0
                self._sync_dir()
                if self._cache is not None and not self._index_current:
                    index.save(self._fd, self._cache)
                self._cache = None
        finally:
            os.close(fd)  # releases the flock

    def _acquire(self, fd: int, lock_path: str) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise io_error(f"cannot lock {lock_path}", exc) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TryAgainError(
                    f"timed out after {self.lock_timeout:g}s waiting for the lock {lock_path}",
                    "another IPAM call holds it; try again later",
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.02)

    def _remove_temporaries(self) -> None:
        """Temporaries exist only while their writer holds the lock: any seen now are stale."""
        for name in self._names():
            if name.startswith(store.TEMP_PREFIX):
                self._unlink(name)

    def _sync_dir(self) -> None:
        if self._dirty:
            self._dirty = False
            with translate_os_errors(f"cannot sync {self.path}"):
                os.fsync(self._fd)

    def reservations(self) -> dict[IPAddress, store.Owner]:
        return {ip: owner for name, owner in self._held().items()
                if (ip := store.reservation_ip(name)) is not None}

    def holder(self, ip: IPAddress) -> store.Owner | None:
        return self._held().get(str(ip))

    def taken(self) -> Container[IPAddress]:
        return store.TakenNames(self._held())

    def held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        held = store.owned_by(self._held().items(), container_id, ifname)
        return store.sort_ips(store.addresses_named(held))

    def held_or_legacy(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        held = store.owned_or_legacy(self._held().items(), container_id, ifname)
        return store.sort_ips(store.addresses_named(held))

    def reserve(self, ip: IPAddress, owner: store.Owner, set_index: int) -> bool:
        self._require_lock()
        name = str(ip)
        with translate_os_errors(f"cannot reserve {ip} in {self.path}"):
            created = self._create_atomically(name, store.encode_owner(owner))
            if created:
                self._replace(f"{store.LAST_RESERVED_PREFIX}{set_index}", name.encode())
        if self._cache is not None:
            if created:
                self._cache[name] = owner
            else:  # created behind our back: learn who holds it
                data = self._read(name)
                self._cache[name] = store.decode_owner(data or b"")
            self._index_current = False
        return created

    def release(self, ip: IPAddress) -> None:
        self._require_lock()
        with translate_os_errors(f"cannot release {ip} in {self.path}"):
            self._unlink(str(ip))
        if self._cache is not None:
            self._cache.pop(str(ip), None)
            self._index_current = False

    def last_reserved(self, set_index: int) -> IPAddress | None:
        self._require_lock()
        data = self._read(f"{store.LAST_RESERVED_PREFIX}{set_index}")
        if data is None:
            return None
        return store.reservation_ip(data.strip().decode("ascii", "replace"))

    def addresses_held(self, container_id: str, ifname: str) -> tuple[IPAddress, ...]:
        with self.locked():
            return self.held(container_id, ifname)

    def _held(self) -> dict[str, store.Owner]:
        """Reservations by file name (the address in canonical text), loaded once a session."""
        self._require_lock()
        if self._cache is None:
            self._cache = self._scan()
        return self._cache

    def _require_lock(self) -> None:
        if not self._depth:
            raise AssertionError("IPAM store used without holding its lock")

    def _scan(self) -> dict[str, store.Owner]:
        out: dict[str, store.Owner] = {}
        for name in filter(store.reservation_ip, self._names()):
            if (data := self._read(name)) is not None:
                out[name] = store.decode_owner(data)
        return out

    def _names(self) -> list[str]:
        with translate_os_errors(f"cannot list {self.path}"):
            return os.listdir(self._fd)

    def _read(self, name: str) -> bytes | None:
        """A regular file's content; None if it vanished. Unreadable ones read as empty."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self._fd)
        except FileNotFoundError:
            return None
        except OSError:
            return b""  # e.g. a symlink planted under an address's name: taken, owner unknown
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            return os.read(fd, MAX_FILE)
        except OSError:
            return b""
        finally:
            os.close(fd)

    def _write_temp(self, data: bytes, sync: bool) -> str:
        temp = f"{store.TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(temp, _NEW_FILE_FLAGS, store.FILE_MODE, dir_fd=self._fd)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._unlink(temp)
            raise
        os.close(fd)
        return temp

    def _create_atomically(self, name: str, data: bytes) -> bool:
        """Create `name` with `data` unless it exists; never visible empty or partial."""
        temp = self._write_temp(data, sync=True)
        self._dirty = True
        try:
            os.link(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            return self._create_in_place(name, data)
        finally:
            self._unlink(temp)

    def _create_in_place(self, name: str, data: bytes) -> bool:
        """The reference's way, for filesystems without hard links (we still hold the lock)."""
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, store.FILE_MODE, dir_fd=self._fd)
        except FileExistsError:
            return False
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _replace(self, name: str, data: bytes) -> None:
        """Atomically replace `name` (the round-robin cursor; losing an update is harmless)."""
        temp = self._write_temp(data, sync=False)
        try:
            os.replace(temp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self._unlink(temp)
            raise
        self._dirty = True

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._fd)
            self._dirty = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_dir(name: str, parent: int | None, what: str, shown: str | None = None) -> int | None:
    """Open a directory without following a symlink at its last component; None if absent."""
    shown = shown or name
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise io_error(f"cannot access {what} {shown}", exc) from None
    if stat.S_ISLNK(st.st_mode):
        raise _symlink_error(what, shown)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {shown} is not a directory")
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _symlink_error(what, shown) from None
        raise io_error(f"cannot open {what} {shown}", exc) from None


def _symlink_error(what: str, shown: str) -> ConfigError:
    return ConfigError(f"{what} {shown} is a symbolic link; refusing to use it",
                       "point it at the real directory")


def _refuse_symlink(path: str, what: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise _symlink_error(what, path)
