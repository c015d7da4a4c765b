"""Round-robin allocation, gateway skip, wrap, exhaustion and requested IPs, on a MemoryStore."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from cni_bridge.ipam.host_local.allocator import candidates, free_count, plan_allocation
from cni_bridge.ipam.host_local.config import HostLocalConfig, load_config
from cni_bridge.ipam.host_local.service import (
    AllocationError,
    Attachment,
    ensure_allocation,
    remove_allocation,
)
from cni_bridge.ipam.host_local.store import Owner
from tests.memory_store import MemoryStore


def config(ranges: list[Any], requested: str = "", version: str = "1.0.0") -> HostLocalConfig:
    net = {"name": "n", "ipam": {"type": "host-local", "ranges": ranges}}
    return load_config(net, version, f"IP={requested}" if requested else "")


SLASH29 = [[{"subnet": "10.9.0.0/29"}]]


def add(cfg: HostLocalConfig, store: MemoryStore, cid: str, ifname: str = "eth0") -> list[str]:
    return [str(ip.address) for ip in ensure_allocation(cfg, store, Attachment(cid, ifname))]


def test_round_robin_on_a_slash29_then_exhaustion() -> None:
    cfg, store = config(SLASH29), MemoryStore()
    got = [add(cfg, store, f"c{i}")[0] for i in range(5)]
    assert got == ["10.9.0.2/29", "10.9.0.3/29", "10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]
    with pytest.raises(AllocationError) as info:
        add(cfg, store, "c5")
    assert info.value.msg == (
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.6"
    )


def test_release_then_wrap_skips_the_gateway() -> None:
    """Observed with the reference: release .4 with the cursor at .6, next ADD gets .4."""
    cfg, store = config(SLASH29), MemoryStore()
    for i in range(5):
        add(cfg, store, f"c{i}")
    remove_allocation(store, Attachment("c2", "eth0"))
    assert add(cfg, store, "new") == ["10.9.0.4/29"]


def test_round_robin_does_not_reuse_a_just_released_address() -> None:
    cfg, store = config(SLASH29), MemoryStore()
    add(cfg, store, "a")
    remove_allocation(store, Attachment("a", "eth0"))
    assert add(cfg, store, "b") == ["10.9.0.3/29"]


def test_candidates_cycle_through_the_ranges_of_a_set() -> None:
    cfg = config([[{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/29", "rangeStart": "10.2.0.5"}]])
    order = [str(p.ip) for p in candidates(cfg.range_sets[0], None)]
    assert order == ["10.1.0.2", "10.2.0.5", "10.2.0.6"]
    after = [str(p.ip) for p in candidates(cfg.range_sets[0], ip_address("10.2.0.5"))]
    assert after == ["10.2.0.6", "10.1.0.2", "10.2.0.5"]  # the cursor itself comes last


def test_cursor_outside_the_set_starts_at_range_start() -> None:
    rs = config(SLASH29).range_sets[0]
    assert str(next(candidates(rs, ip_address("192.168.1.1"))).ip) == "10.9.0.2"


def test_gateway_in_the_middle_is_skipped() -> None:
    rs = config([[{"subnet": "10.3.0.0/29", "gateway": "10.3.0.4"}]]).range_sets[0]
    assert [str(p.ip) for p in candidates(rs, None)] == [
        "10.3.0.1", "10.3.0.2", "10.3.0.3", "10.3.0.5", "10.3.0.6"
    ]


def test_exhaustion_is_counted_not_walked() -> None:
    """A huge IPv6 range with everything but one taken would take forever to walk."""
    rs = config([[{"subnet": "fd00::/64", "rangeStart": "fd00::10", "rangeEnd": "fd00::13"}]])\
        .range_sets[0]
    taken = {ip_address(f"fd00::{n:x}") for n in range(0x10, 0x14)}
    assert free_count(rs, taken) == 0
    assert plan_allocation(rs, None, taken) is None
    big = config([[{"subnet": "fd00::/64"}]]).range_sets[0]
    assert big.allocatable() == 2**64 - 2
    pick = plan_allocation(big, ip_address("fd00::ffff:ffff:ffff:fffe"), set())
    assert pick is not None and str(pick.ip) == "fd00::ffff:ffff:ffff:ffff"


def test_dual_stack_one_address_per_set() -> None:
    cfg, store = config([[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00:9::/120"}]]), MemoryStore()
    assert add(cfg, store, "a") == ["10.9.0.2/29", "fd00:9::2/120"]
    assert store.cursors == {0: ip_address("10.9.0.2"), 1: ip_address("fd00:9::2")}
    assert store.lock_count == 1  # one lock for the whole ADD


def test_requested_ip() -> None:
    cfg, store = config(SLASH29, requested="10.9.0.5"), MemoryStore()
    assert add(cfg, store, "a") == ["10.9.0.5/29"]
    assert store.cursors[0] == ip_address("10.9.0.5")  # the reference moves the cursor too


def test_requested_ip_taken_names_the_holder() -> None:
    store = MemoryStore()
    add(config(SLASH29, requested="10.9.0.5"), store, "holder", "net1")
    with pytest.raises(AllocationError) as info:
        add(config(SLASH29, requested="10.9.0.5"), store, "b")
    assert info.value.msg == (
        "failed to allocate for range 0: requested IP address 10.9.0.5 is not available in "
        "range set 10.9.0.1-10.9.0.6: held by container holder ifname net1"
    )


def test_requested_gateway_is_refused() -> None:
    with pytest.raises(AllocationError, match="requested ip 10.9.0.1 is subnet's gateway"):
        add(config(SLASH29, requested="10.9.0.1"), MemoryStore(), "a")


def test_requested_ip_outside_every_set_rolls_back() -> None:
    store = MemoryStore()
    with pytest.raises(AllocationError) as info:
        add(config(SLASH29, requested="10.77.0.1"), store, "a")
    assert info.value.msg == "failed to allocate all requested IPs: 10.77.0.1"
    assert store.files == {}


def test_duplicate_allocation_is_refused() -> None:
    cfg, store = config(SLASH29), MemoryStore()
    add(cfg, store, "a")
    with pytest.raises(AllocationError) as info:
        add(cfg, store, "a")
    assert info.value.msg == (
        "failed to allocate for range 0: 10.9.0.2 has been allocated to a, "
        "duplicate allocation is not allowed"
    )
    assert add(cfg, store, "a", "eth1") == ["10.9.0.3/29"]  # another ifname is another attachment


def test_legacy_reservation_counts_as_duplicate() -> None:
    cfg, store = config(SLASH29), MemoryStore()
    with store.locked():
        store.reserve(ip_address("10.9.0.4"), Owner("a", None), 0)
    with pytest.raises(AllocationError, match="10.9.0.4 has been allocated to a"):
        add(cfg, store, "a")


def test_failure_in_a_later_set_releases_only_this_adds_addresses() -> None:
    cfg = config([[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00:9::/126"}]])
    store = MemoryStore()
    with store.locked():  # an earlier ADD of the same attachment on another network's range
        store.reserve(ip_address("10.50.0.9"), Owner("a", "eth0"), 7)
        store.reserve(ip_address("fd00:9::2"), Owner("other", "eth0"), 1)
        store.reserve(ip_address("fd00:9::3"), Owner("other2", "eth0"), 1)
    with pytest.raises(AllocationError, match="failed to allocate for range 1: no IP addresses"):
        add(cfg, store, "a")
    assert ip_address("10.9.0.2") not in store.files
    assert store.files[ip_address("10.50.0.9")] == Owner("a", "eth0")


def test_delete_releases_by_container_and_ifname() -> None:
    cfg, store = config([[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00:9::/120"}]]), MemoryStore()
    add(cfg, store, "a", "eth0")
    add(cfg, store, "a", "eth1")
    released = remove_allocation(store, Attachment("a", "eth0"))
    assert [str(ip) for ip in released] == ["10.9.0.2", "fd00:9::2"]
    assert sorted(str(ip) for ip in store.files) == ["10.9.0.3", "fd00:9::3"]
    assert remove_allocation(store, Attachment("a", "eth0")) == ()  # repeat: success, nothing


def test_delete_falls_back_to_legacy_files() -> None:
    store = MemoryStore()
    with store.locked():
        store.reserve(ip_address("10.9.0.2"), Owner("a", None), 0)
        store.reserve(ip_address("10.9.0.3"), Owner("b", None), 0)
    assert [str(ip) for ip in remove_allocation(store, Attachment("a", "eth7"))] == ["10.9.0.2"]
    assert list(store.files) == [ip_address("10.9.0.3")]
