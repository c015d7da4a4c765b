#!/usr/bin/env python3
"""Compare plugin builds call by call: each role run directly (no libcni), interleaved.

    tests/perf/startup.py [-n ROUNDS] LABEL=PLUGIN_DIR [LABEL=PLUGIN_DIR ...]

For A/B measurements of start-up work (freezing options, imports): in a throwaway host
namespace H and container namespace C (removed on exit), each round runs, for every build in
turn, VERSION, bridge ADD, portmap ADD (one mapping, nftables), bridge CHECK, portmap CHECK,
portmap DEL and bridge DEL, and reports per call the median wall time and the median CPU time
(user + system of the plugin and the tools it ran; less sensitive to a busy machine than wall
time). Needs root. A plugin directory may also hold launchers that run the source tree under
each role's name (build/measure.sh makes one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import NETNS_DIR, PATH, PREFIX, Worker, mapping, require_ok, sh  # noqa: E402

CALLS = [("bridge", "VERSION"), ("bridge", "ADD"), ("portmap", "ADD"), ("bridge", "CHECK"),
         ("portmap", "CHECK"), ("portmap", "DEL"), ("bridge", "DEL")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--rounds", type=int, default=20)
    p.add_argument("builds", nargs="+", metavar="LABEL=PLUGIN_DIR")
    args = p.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    tmp = Path(tempfile.mkdtemp(prefix="cniperf-startup-"))
    host, cont = f"{PREFIX}H", f"{PREFIX}C"
    made: list[str] = []
    worker = None
    wall: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    load = [os.getloadavg()[0]]
    try:
        for name in (host, cont):
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        worker = Worker(host)
        bridge_conf = {"cniVersion": "1.0.0", "name": "perfnet", "type": "bridge",
                       "bridge": "cniperf0", "isGateway": True, "ipMasq": True,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                                "dataDir": str(tmp / "ipam")}}
        for i in range(args.rounds + 1):  # round 0 warms the page cache, not recorded
            for label, plugin_dir in builds[i % len(builds):] + builds[:i % len(builds)]:
                env = {"PATH": PATH, "CNI_CONTAINERID": f"startup-{label}-{i}",
                       "CNI_NETNS": f"{NETNS_DIR}/{cont}", "CNI_IFNAME": "eth0",
                       "CNI_PATH": plugin_dir, "CNI_BRIDGE_STATE_DIR": str(tmp / "state")}
                port_conf: dict[str, Any] = {
                    "cniVersion": "1.0.0", "name": "perfnet", "type": "portmap", "snat": True,
                    "runtimeConfig": {"portMappings": [mapping(40000 + i)]}}
                result: Any = None
                for role, verb in CALLS:
                    conf = dict(bridge_conf if role == "bridge" else port_conf)
                    if verb != "ADD" or role == "portmap":
                        conf["prevResult"] = result
                    res = require_ok(worker.one({
                        "argv": [str(Path(plugin_dir) / role)],
                        "env": {**env, "CNI_COMMAND": verb},
                        "stdin": json.dumps(conf)}), f"{label} {role} {verb}")
                    if role == "bridge" and verb == "ADD":
                        result = json.loads(res["stdout"])
                    if i:
                        key = (label, role, verb)
                        wall.setdefault(key, []).append(res["ms"])
                        cpu.setdefault(key, []).append(res["cpu_ms"])
        load.append(os.getloadavg()[0])
    finally:
        if worker is not None:
            worker.close()
        for name in reversed(made):
            sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"median ms over {args.rounds} rounds, wall / cpu; load average {load[0]:.1f} -> "
          f"{load[-1]:.1f}; {os.cpu_count()} CPUs")
    labels = [b[0] for b in builds]
    print(f"{'call':16s}" + "".join(f"{label:>22s}" for label in labels))
    totals = {label: [0.0, 0.0] for label in labels}
    for role, verb in CALLS:
        row = f"{role + ' ' + verb:16s}"
        for label in labels:
            w = statistics.median(wall[(label, role, verb)])
            c = statistics.median(cpu[(label, role, verb)])
            totals[label][0] += w
            totals[label][1] += c
            row += f"{w:13.1f} / {c:6.1f}"
        print(row)
    print(f"{'sum':16s}" + "".join(f"{totals[lb][0]:13.1f} / {totals[lb][1]:6.1f}"
                                   for lb in labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
