"""host-local as a CNI plugin: a Request in, the store opened, one service verb called (as the
``host-local`` executable, and in-process by the bridge through ``ipam.facade``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_interface

from cni_bridge.cni.errors import IO_FAILURE, PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import DNS, IPInterface, Result
from cni_bridge.diag import logger
from cni_bridge.ipam.host_local.config import (
    HOST_LOCAL_ARG_KEYS,
    HostLocalConfig,
    StoreLocation,
    load_config,
    load_location,
    parse_resolv_conf,
)
from cni_bridge.ipam.host_local.file_store import LOCK_TIMEOUT, FileStore
from cni_bridge.ipam.host_local.service import (
    Attachment,
    check_allocation,
    check_capacity,
    ensure_allocation,
    remove_allocation,
    remove_unlisted,
)

log = logger(__name__)
MAX_RESOLV_CONF = 1024 * 1024


class HostLocalPlugin:
    def __init__(self, extra_arg_keys: frozenset[str] = frozenset(),
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.arg_keys = HOST_LOCAL_ARG_KEYS | extra_arg_keys
        self.lock_timeout = lock_timeout

    def add(self, req: Request) -> Result:
        with req.timer.phase("ipam"):
            cfg = self._config(req)
            dns = read_resolv_conf(cfg.resolv_conf) if cfg.resolv_conf else DNS()
            with self._store(cfg.location, create=True) as store:
                assert store is not None
                ips = ensure_allocation(cfg, store, _attachment(req))
        return Result(ips=ips, routes=cfg.routes, dns=dns)

    def delete(self, req: Request) -> None:
        """Needs only name and dataDir: invalid ranges or no netns do not stop the release."""
        with req.timer.phase("ipam"), self._store(load_location(req.config)) as store:
            if store is not None:
                released = remove_allocation(store, _attachment(req))
                log.info("released %s", ", ".join(map(str, released)) or "nothing")

    def check(self, req: Request) -> None:
        with req.timer.phase("ipam"):
            cfg = self._config(req)
            expected = None
            if req.prev_result is not None and req.prev_result.ips:
                expected = {ip.address.ip for ip in req.prev_result.ips}
            with self._store(cfg.location) as store:
                if store is None:
                    raise CniError(
                        f"host-local: Failed to find address added by container "
                        f"{req.env.container_id}",
                        f"the store {cfg.location.data_dir}/{cfg.location.network} does not exist",
                    )
                check_allocation(cfg, store, _attachment(req), expected)

    def gc(self, req: Request) -> None:
        with req.timer.phase("ipam"), self._store(load_location(req.config)) as store:
            if store is not None:
                released = remove_unlisted(store, req.valid_attachments())
                if released:
                    log.info("GC released %s", ", ".join(map(str, released)))

    def status(self, req: Request) -> None:
        """Code 50 when ADD could not succeed: unusable data dir, or a range set exhausted."""
        cfg = self._config(req)
        try:
            with self._store(cfg.location) as store:
                if store is None:
                    _check_creatable(cfg.location)
                else:
                    store.check_usable()
                    check_capacity(cfg, store)
        except CniError as exc:
            if exc.code == PLUGIN_NOT_AVAILABLE:
                raise
            raise CniError(exc.msg, exc.details, code=PLUGIN_NOT_AVAILABLE) from None

    def addresses_held(self, req: Request) -> tuple[IPInterface, ...]:
        """For the bridge's DEL; prefixes from the ranges (host-length outside them)."""
        location = load_location(req.config)
        try:
            cfg: HostLocalConfig | None = self._config(req)
        except CniError:
            cfg = None
        with self._store(location) as store:
            if store is None:
                return ()
            held = store.addresses_held(req.env.container_id, req.env.ifname)
        out = []
        for ip in held:
            r = cfg.range_for(ip) if cfg is not None else None
            out.append(r.interface(ip) if r is not None else ip_interface(ip))
        return tuple(out)

    def _config(self, req: Request) -> HostLocalConfig:
        return load_config(req.config, req.cni_version, req.env.args, self.arg_keys)

    @contextmanager
    def _store(self, location: StoreLocation, create: bool = False) -> Iterator[FileStore | None]:
        store = FileStore.open(location, create=create, lock_timeout=self.lock_timeout)
        try:
            yield store
        finally:
            if store is not None:
                store.close()


def _attachment(req: Request) -> Attachment:
    return Attachment(req.env.container_id, req.env.ifname)


def read_resolv_conf(path: str) -> DNS:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RESOLV_CONF)
    except OSError as exc:
        raise CniError(f"cannot read ipam.resolvConf {path}: {exc.strerror}", code=IO_FAILURE) \
            from None
    return parse_resolv_conf(data.decode("utf-8", "replace"))


def _check_creatable(location: StoreLocation) -> None:
    """The store does not exist yet: ADD must be able to create it."""
    path = os.path.abspath(location.data_dir)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise CniError(
            f"IPAM data dir {location.data_dir} cannot be created",
            f"{path} is not a writable directory",
            code=PLUGIN_NOT_AVAILABLE,
        )
