"""host-local's verbs over any Store (no file I/O), compatible with the reference's disk state.

Unlike the reference: one lock for a whole (dual-stack) ADD; a failed ADD releases only what it
reserved; a taken requested address names its holder; CHECK compares prevResult with what is
held; GC releases reservations of attachments no longer valid.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from cni_bridge.cni.errors import PLUGIN_NOT_AVAILABLE, CniError
from cni_bridge.cni.result import IPAddress, IPConfig
from cni_bridge.ipam.host_local.allocator import free_count, plan_allocation, plan_requested
from cni_bridge.ipam.host_local.config import HostLocalConfig
from cni_bridge.ipam.host_local.ranges import RangeSet
from cni_bridge.ipam.host_local.store import Owner, Store, sort_ips


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str

    @property
    def owner(self) -> Owner:
        return Owner(self.container_id.strip(), self.ifname)

    def __str__(self) -> str:
        return f"container {self.container_id} ifname {self.ifname}"


class AllocationError(CniError):
    """An ADD that could not be served (the reference's generic error, code 999)."""


def ensure_allocation(cfg: HostLocalConfig, store: Store, att: Attachment) -> tuple[IPConfig, ...]:
    """Reserve one address per range set for `att`, all or nothing."""
    chosen, unused = plan_requested(cfg.range_sets, cfg.requested)
    reserved: list[IPAddress] = []
    with store.locked():
        try:
            ips = tuple(
                _allocate_one(cfg, store, att, index, chosen.get(index), reserved)
                for index in range(len(cfg.range_sets))
            )
            if unused:
                listed = " ".join(str(ip) for ip in unused)
                raise AllocationError(
                    f"failed to allocate all requested IPs: {listed}",
                    "no configured range set contains them",
                )
        except BaseException:
            for ip in reserved:
                store.release(ip)
            raise
    return ips


def _allocate_one(cfg: HostLocalConfig, store: Store, att: Attachment, index: int,
                  requested: IPAddress | None, reserved: list[IPAddress]) -> IPConfig:
    range_set = cfg.range_sets[index]
    try:
        ip = (_reserve_requested(range_set, store, att, index, requested) if requested is not None
              else _reserve_next(range_set, store, att, index))
    except AllocationError as exc:
        raise AllocationError(f"failed to allocate for range {index}: {exc.msg}", exc.details) \
            from None
    reserved.append(ip)
    r = range_set.range_for(ip)
    assert r is not None
    return IPConfig(address=r.interface(ip), gateway=r.gateway)


def _reserve_requested(range_set: RangeSet, store: Store, att: Attachment, index: int,
                       ip: IPAddress) -> IPAddress:
    if range_set.is_gateway(ip):
        raise AllocationError(f"requested ip {ip} is subnet's gateway")
    holder = store.holder(ip)
    if holder is None and store.reserve(ip, att.owner, index):
        return ip
    holder = holder or store.holder(ip) or Owner("", None)
    raise AllocationError(
        f"requested IP address {ip} is not available in range set {range_set}: "
        f"held by {holder.describe()}"
    )


def _reserve_next(range_set: RangeSet, store: Store, att: Attachment, index: int) -> IPAddress:
    for ip in store.held_or_legacy(att.container_id, att.ifname):
        if range_set.contains(ip):
            raise AllocationError(
                f"{ip} has been allocated to {att.container_id}, "
                "duplicate allocation is not allowed",
                f"{att} already holds {ip}; DEL it first",
            )
    taken = store.taken()  # live: a failed reserve (created behind our back) shows in it
    last = store.last_reserved(index)
    while (pick := plan_allocation(range_set, last, taken)) is not None:
        if store.reserve(pick.ip, att.owner, index):
            return pick.ip
    raise AllocationError(
        f"no IP addresses available in range set: {range_set}",
        f"all {range_set.allocatable()} addresses are reserved",
    )


def remove_allocation(store: Store, att: Attachment) -> tuple[IPAddress, ...]:
    """Release everything `att` holds (legacy ID-only files too); nothing held is success."""
    with store.locked():
        held = store.held(att.container_id, att.ifname)
        _, errors = _release(store, held)
    if errors:
        raise CniError(";".join(errors))
    return held


def _release(store: Store, ips: Iterable[IPAddress]) -> tuple[list[IPAddress], list[str]]:
    """Release each of `ips`: (those released, the errors of the others)."""
    released: list[IPAddress] = []
    errors: list[str] = []
    for ip in ips:
        try:
            store.release(ip)
            released.append(ip)
        except CniError as exc:
            errors.append(str(exc))
    return released, errors


def check_allocation(cfg: HostLocalConfig, store: Store, att: Attachment,
                     expected: Collection[IPAddress] | None) -> None:
    """`att` must hold an address; with `expected` (prevResult's), exactly those it lists
    (addresses outside every configured subnet are another plugin's: not compared)."""
    with store.locked():
        held = set(store.held(att.container_id, att.ifname))
    if not held:
        raise CniError(
            f"host-local: Failed to find address added by container {att.container_id}",
            f"no reservation for {att} in {cfg.location.data_dir}/{cfg.location.network}",
        )
    if expected is None:
        return
    ours = {ip for ip in expected if _in_subnets(cfg, ip)}
    missing, extra = sort_ips(list(ours - held)), sort_ips(list(held - ours))
    if missing or extra:
        diff = (("in prevResult but not reserved", missing),
                ("reserved but not in prevResult", extra))
        detail = "; ".join(f"{what}: {', '.join(map(str, ips))}" for what, ips in diff if ips)
        raise CniError(f"host-local: addresses of {att} differ from prevResult", detail)


def _in_subnets(cfg: HostLocalConfig, ip: IPAddress) -> bool:
    return any(ip in r.subnet for s in cfg.range_sets for r in s.ranges)


def remove_unlisted(store: Store, keep: Collection[tuple[str, str]]) -> tuple[IPAddress, ...]:
    """Release reservations whose owner is not in `keep`; a legacy file is kept when its
    container ID is in `keep` at all."""
    keep_ids = {cid for cid, _ in keep}
    with store.locked():
        stale = [ip for ip, owner in store.reservations().items()
                 if not _is_kept(owner, keep, keep_ids)]
        released, errors = _release(store, stale)
    if errors:
        raise CniError(f"GC released {len(released)} addresses but not all", "; ".join(errors))
    return sort_ips(released)


def _is_kept(owner: Owner, keep: Collection[tuple[str, str]], keep_ids: set[str]) -> bool:
    if owner.ifname is None:
        return bool(owner.container_id) and owner.container_id in keep_ids
    return (owner.container_id, owner.ifname) in keep


def check_capacity(cfg: HostLocalConfig, store: Store) -> None:
    """Code 50 when some range set has no free address (ADD would fail)."""
    with store.locked():
        taken = set(store.reservations())
    for index, range_set in enumerate(cfg.range_sets):
        if free_count(range_set, taken) == 0:
            raise CniError(
                f"range set {index} ({range_set}) is exhausted",
                f"all {range_set.allocatable()} addresses are reserved",
                code=PLUGIN_NOT_AVAILABLE,
            )
