"""Property tests: random ADD/DEL sequences on random small ranges.

Never the same address twice, never a network, gateway or broadcast address, never outside
[rangeStart, rangeEnd]; ADD fails only when the set is really full; the file store behaves
exactly like the in-memory store.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cni_bridge.ipam.host_local.config import HostLocalConfig, StoreLocation, load_config
from cni_bridge.ipam.host_local.file_store import FileStore
from cni_bridge.ipam.host_local.service import (
    AllocationError,
    Attachment,
    ensure_allocation,
    remove_allocation,
)
from cni_bridge.ipam.host_local.store import Store
from tests.memory_store import MemoryStore


@dataclass(frozen=True)
class Op:
    kind: str  # "add" or "del"
    container: int
    ifname: str


@st.composite
def range_sets(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """One set of 1-2 small IPv4 ranges in distinct /28-/30 subnets, optionally narrowed."""
    ranges = []
    for i in range(draw(st.integers(1, 2))):
        prefix = draw(st.integers(28, 30))
        net = IPv4Network(f"10.{i}.0.0/{prefix}")
        hosts = list(net.hosts())
        lo = draw(st.integers(0, len(hosts) - 1))
        hi = draw(st.integers(lo, len(hosts) - 1))
        r: dict[str, Any] = {"subnet": str(net)}
        if draw(st.booleans()):
            r["rangeStart"], r["rangeEnd"] = str(hosts[lo]), str(hosts[hi])
        if draw(st.booleans()):
            r["gateway"] = str(draw(st.sampled_from(hosts)))
        ranges.append(r)
    return [ranges]


ops = st.lists(
    st.builds(Op, st.sampled_from(["add", "add", "del"]), st.integers(0, 12),
              st.sampled_from(["eth0", "eth1"])),
    max_size=60,
)


def run(cfg: HostLocalConfig, store: Store, sequence: list[Op]) -> list[str]:
    """Apply the ops, checking invariants after each; returns a transcript."""
    live: dict[tuple[int, str], str] = {}
    transcript = []
    rs = cfg.range_sets[0]
    for op in sequence:
        att = Attachment(f"c{op.container}", op.ifname)
        key = (op.container, op.ifname)
        if op.kind == "del":
            remove_allocation(store, att)
            live.pop(key, None)
            transcript.append(f"del {key}")
            continue
        with store.locked():
            used = len(store.reservations())
        try:
            (ipc,) = ensure_allocation(cfg, store, att)
        except AllocationError as exc:
            assert key in live or used >= rs.allocatable(), exc.msg
            transcript.append(f"add {key} failed")
            continue
        assert key not in live
        ip = ipc.address.ip
        r = rs.range_for(ip)
        assert r is not None and r.range_start <= ip <= r.range_end  # type: ignore[operator]
        assert ip not in (r.gateway, r.subnet.network_address, r.subnet.broadcast_address)
        assert str(ip) not in live.values()
        live[key] = str(ip)
        transcript.append(f"add {key} {ip}")
    with store.locked():
        held = {str(ip) for ip in store.reservations()}
    assert held == set(live.values())
    return transcript


@settings(max_examples=150, deadline=None)
@given(range_sets(), ops)
def test_memory_store_never_hands_out_an_address_twice(
    ranges: list[list[dict[str, Any]]], sequence: list[Op]
) -> None:
    cfg = load_config({"name": "p", "ipam": {"ranges": ranges}}, "1.0.0")
    run(cfg, MemoryStore(), sequence)


@settings(max_examples=25, deadline=None)
@given(range_sets(), ops)
def test_file_store_behaves_like_the_memory_store(
    ranges: list[list[dict[str, Any]]], sequence: list[Op]
) -> None:
    cfg = load_config({"name": "p", "ipam": {"ranges": ranges}}, "1.0.0")
    expected = run(cfg, MemoryStore(), sequence)
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore.open(StoreLocation(tmp, "p"), create=True)
        assert store is not None
        with store:
            assert run(cfg, store, sequence) == expected


def test_addresses_are_python_canonical() -> None:
    assert str(ip_address("fd00:0:0::0:5")) == "fd00::5"
