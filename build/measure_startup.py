"""Time start-up: median wall time (and CPU time) of N runs of each command, interleaved.

Usage (inside a scratch network namespace): measure_startup.py N LABEL=CMD [LABEL=CMD ...]
Each CMD is run with env CNI_COMMAND=VERSION and stdin {"cniVersion":"1.1.0"}. CPU time
(user + system, from the children's rusage) is less sensitive to a busy machine than wall time.
"""

from __future__ import annotations

import resource
import shlex
import statistics
import subprocess
import sys
import time


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    runs = int(sys.argv[1])
    variants = [arg.split("=", 1) for arg in sys.argv[2:]]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION"}
    wall: dict[str, list[float]] = {label: [] for label, _ in variants}
    cpu: dict[str, list[float]] = {label: [] for label, _ in variants}
    for i in range(runs + 1):
        for label, cmd in variants:
            c0, t0 = cpu_children(), time.perf_counter()
            proc = subprocess.run(
                shlex.split(cmd), input=b'{"cniVersion":"1.1.0"}', env=env, capture_output=True
            )
            elapsed, cpu_used = time.perf_counter() - t0, cpu_children() - c0
            if proc.returncode != 0 or not proc.stdout:
                print(f"{label}: bad answer {proc.returncode} {proc.stdout!r} {proc.stderr!r}")
                return 1
            if i:  # the first round warms the page cache
                wall[label].append(elapsed * 1000)
                cpu[label].append(cpu_used * 1000)
    for label in wall:
        values = sorted(wall[label])
        print(
            f"{label:20s} wall median {statistics.median(values):6.1f} ms  "
            f"min {values[0]:6.1f}  p90 {values[int(len(values) * 0.9) - 1]:6.1f}   "
            f"cpu median {statistics.median(cpu[label]):6.1f} ms   (n={runs})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
