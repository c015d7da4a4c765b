#!/usr/bin/env python3
"""What proving a namespace's state directory its own costs a plugin call (root).

Runs itself inside a throwaway network namespace (``cniperf<pid>-state``) on a temporary state
root, and prints microseconds per call, median of many:

- before: the path alone (one stat of /proc/self/ns/net), what every call paid before owners;
- the check a call pays once per process: stat, a socket for the cookie, the owner file and
  the boot id read and compared (``records.state_root`` with nothing remembered);
- a later call in the same process (remembered);
- the first call that finds a dead namespace's directory with N records and replaces it.

    tests/perf/node_state.py [--records 4000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cni_bridge.node import owner as nodeowner  # noqa: E402
from cni_bridge.node import records  # noqa: E402

ROUNDS, REPEAT = 31, 2000


def per_call_us(call: object, repeat: int = REPEAT) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(repeat):
            call()  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - start) / repeat / 1000)
    return statistics.median(samples)


def unremembered() -> None:
    records._proven = None
    records.state_root()


def dead_directory(count: int) -> None:
    root = Path(records.namespace_dir())
    (root / "net").mkdir(parents=True)
    (root / records.OWNER_FILE).write_text(nodeowner.owner_text(1, "an-earlier-boot"))
    for i in range(count):
        (root / "net" / f"c{i}.eth0.portmap.json").write_text("{}")


def measure(count: int) -> None:
    base = os.environ[records.STATE_ENV]
    print(f"kernel {os.uname().release}, cookie {nodeowner.netns_cookie()}, state root {base}")
    before = per_call_us(lambda: os.path.join(
        base, f"netns-{os.stat('/proc/self/ns/net').st_ino}"))
    first = per_call_us(unremembered)
    later = per_call_us(records.state_root)
    print(f"before owners (path only)        {before:8.2f} us")
    print(f"first call of a process (check)  {first:8.2f} us  (+{first - before:.2f})")
    print(f"later calls (remembered)         {later:8.2f} us")
    for n in (0, count):
        records._proven = None
        dead_directory(n)
        start = time.perf_counter_ns()
        records.state_root()
        took = (time.perf_counter_ns() - start) / 1e6
        print(f"replacing a dead namespace's directory of {n:5d} records: {took:8.2f} ms")
        Path(records.namespace_dir(), records.OWNER_FILE).write_text("")
        records._proven = None
        shutil.rmtree(records.namespace_dir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.inside:
        measure(opts.records)
        return 0
    name = f"cniperf{os.getpid()}-state"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, records.STATE_ENV: tmp}
            return subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__,
                                   "--inside", "--records", str(opts.records)],
                                  env=env, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
