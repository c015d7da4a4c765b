"""Churn soak (USERS.md items 1, 6, 16): ADD/CHECK/DEL cycles, 8 at a time, through the
conflist runner (bridge + host-local + portmap), on a /28 so addresses are reused constantly,
one port mapping per container (host ports never repeat), on both firewall backends.

Every address handed out is recorded with the interval it was certainly held (from the end of its
ADD to the start of its DEL); two attachments holding one address at once is a failure. At the
end nothing may be left: no reservation file, no host veth, no firewall element or rule naming a
container address, no record, no cached result.

CI size: about 35 s of churn per backend. `CNI_BRIDGE_SOAK=long`: 5 minutes per backend;
`CNI_BRIDGE_SOAK_SECONDS=N` sets the time per backend.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.integration.test_reliability_common import BACKENDS, LONG, World, make_world
from tests.netns import Netns

__all__ = ["make_world"]

WORKERS = 8
DURATION = float(os.environ.get("CNI_BRIDGE_SOAK_SECONDS", 0)) or (300.0 if LONG else 35.0)
MIN_CYCLES = 20  # fewer than this in DURATION means the soak measured nothing
MAX_FAILURES = 5


@dataclass(frozen=True)
class Hold:
    ip: str
    cid: str
    start: float  # ADD returned
    end: float  # DEL about to start


def overlapping(holds: list[Hold]) -> list[tuple[Hold, Hold]]:
    """Pairs of different attachments that held the same address at the same time."""
    found = []
    by_ip: dict[str, list[Hold]] = {}
    for h in holds:
        by_ip.setdefault(h.ip, []).append(h)
    for same in by_ip.values():
        same.sort(key=lambda h: h.start)
        for a, b in itertools.pairwise(same):
            if b.start < a.end:
                found.append((a, b))
    return found


def test_overlap_detector() -> None:
    a, b, c = Hold("x", "a", 0, 2), Hold("x", "b", 1, 3), Hold("x", "c", 3, 4)
    assert overlapping([c, a, b]) == [(a, b)]
    assert overlapping([a, c, Hold("y", "d", 0, 9)]) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_soak(backend: str, make_world: Callable[..., World],
                    netns: Callable[[str], Netns]) -> None:
    world = make_world(backend, subnet="10.99.0.0/28")
    containers = [netns(f"C{i}") for i in range(WORKERS)]
    holds: list[Hold] = []
    failures: list[str] = []
    ops = {"ADD": 0, "CHECK": 0, "DEL": 0}
    lock = threading.Lock()
    ports = itertools.count(20000)
    deadline = time.monotonic() + DURATION

    def worker(w: int) -> None:
        ns = containers[w]
        for n in itertools.count():
            if time.monotonic() > deadline or len(failures) >= MAX_FAILURES:
                return
            cid = f"w{w}-{n}"
            with lock:
                port = next(ports)
            rt = world.rt(cid, ns, port)
            step = "ADD"
            try:
                result = world.add(rt)
                start = time.monotonic()
                ip = result["ips"][0]["address"].split("/")[0]
                owner = world.reservations().get(ip)
                assert owner == f"{cid}/eth0", f"{ip} handed to {cid} but its file says {owner}"
                step = "CHECK"
                world.check(rt)
                step = "DEL"
                end = time.monotonic()
                world.delete(rt)
            except Exception as exc:  # collected: the soak reports every failure at the end
                with lock:
                    failures.append(f"{step} {cid}: {exc}")
                return
            with lock:
                holds.append(Hold(ip, cid, start, end))
                ops["ADD"] += 1
                ops["CHECK"] += 1
                ops["DEL"] += 1

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(worker, range(WORKERS)))
    elapsed = time.monotonic() - began

    duplicates = overlapping(holds)
    distinct = len({h.ip for h in holds})
    print(f"\nchurn {backend}: {sum(ops.values())} operations ({ops}) in {elapsed:.1f}s, "
          f"{WORKERS}-way, {len(holds)} attachments over {distinct} addresses, "
          f"{len(duplicates)} duplicates, {len(failures)} failures")
    assert not failures, failures
    assert not duplicates, duplicates[:5]
    assert len(holds) >= MIN_CYCLES
    assert distinct == 13  # a /28 without network, gateway and broadcast: all of it reused
    world.assert_clean(f"after {len(holds)} churn cycles")
