#!/usr/bin/env python3
"""Where a served call's time goes outside the worker's own work.

    tests/perf/overhead.py [--ours DIR] [--samples 30]

Needs root and the frozen build. In a throwaway namespace H (``cniperf<pid>-ovh``, removed on
exit, with its container namespaces) it starts ``cni-bridge serve`` on a private socket, then,
from a driver running inside H (no ``ip netns exec`` per call), runs served calls of the frozen
executables: bridge STATUS, bridge ADD and bridge DEL (host-local in-process), one container
per ADD/DEL pair. Each served call's call-log line carries a timeline (seconds since the epoch,
comparable across processes) of when the server accepted the connection, had the HELLO, forked
the worker, the worker was in the caller's namespaces, had the request, started and ended the
call; the driver adds when it spawned the plugin and when it reaped it. Printed: the median of
each step per verb, and the overhead (everything but the call itself).

Not part of the test run (a timing is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = f"cniperf{os.getpid()}-ovh"
# The servers compared side by side, by their --spare-workers (0: a worker forked at each call).
MODES = ["spares0", "spares2"]
# Between two calls: each call here stands for one operation of a runtime, whose plugin calls
# (an ADD's bridge and portmap) come back to back, but whose operations are apart.
PAUSE = 0.03
# (name, from, to): the steps of a served call, in order (the timeline's keys: loop.py,
# spare.py, worker.py, call.py).
STEPS = (("exec, connect, server wakes", "spawn", "accept"),
         ("HELLO read", "accept", "hello"),
         ("checks, to the worker (spare or fork)", "hello", "worker"),
         ("setns, chroot", "worker", "entered"),
         ("ACCEPT, stdin, REQUEST", "entered", "request"),
         ("adopt the caller's env", "request", "call"),
         ("the call itself", "call", "logged"),
         ("RESULT, print, exit", "logged", "exit"))


def conf(tmp: Path) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "ovhnet", "type": "bridge", "bridge": "ovh0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "dataDir": str(tmp / "ipam"),
                     "ranges": [[{"subnet": "10.46.0.0/16"}]]}}


def timed_call(ours: Path, tmp: Path, mode: str, verb: str, cid: str,
               netns: str) -> dict[str, float]:
    """Run one bridge call served by the server of `mode`; its timeline (driver's spawn/exit
    added)."""
    env = {"PATH": PATH, "CNI_BRIDGE_STATE_DIR": str(tmp / "state"),
           "CNI_BRIDGE_SOCKET": str(tmp / f"{mode}.sock"),
           "CNI_BRIDGE_LOG": str(tmp / "calls.jsonl"),
           "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": str(ours)}
    stdin = tmp / "stdin.json"
    stdin.write_text(json.dumps(conf(tmp)))
    actions = [(os.POSIX_SPAWN_OPEN, 0, str(stdin), os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(tmp / "out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                0o600)]
    spawn = time.time()
    pid = os.posix_spawn(str(ours / "bridge"), [str(ours / "bridge")], env,
                         file_actions=actions)
    _, status = os.waitpid(pid, 0)
    done = time.time()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"bridge {verb} failed: {(tmp / 'out').read_text()}")
    last = json.loads((tmp / "calls.jsonl").read_text().splitlines()[-1])
    if not last.get("served") or "timeline" not in last:
        raise SystemExit(f"bridge {verb} was not served: {last}")
    return {**last["timeline"], "spawn": spawn, "exit": done}


def inner(ours: Path, tmp: Path, samples: int, prefix: str) -> dict[str, list[dict[str, float]]]:
    """Inside H: the calls, ADD and DEL of one container namespace per sample, the servers
    alternated call by call."""
    runs: dict[str, list[dict[str, float]]] = {}
    for mode in MODES:
        timed_call(ours, tmp, mode, "ADD", "warm", f"/run/netns/{prefix}-c0")  # makes the bridge
        timed_call(ours, tmp, mode, "DEL", "warm", f"/run/netns/{prefix}-c0")
    for n in range(samples):
        netns = f"/run/netns/{prefix}-c{n % 4}"
        for mode in (MODES if n % 2 else MODES[::-1]):
            for verb in ("STATUS", "ADD", "DEL"):
                cid = "" if verb == "STATUS" else f"{mode}{n}"
                runs.setdefault(f"{verb}, {mode}", []).append(
                    timed_call(ours, tmp, mode, verb, cid, netns if cid else ""))
                time.sleep(PAUSE)
    return runs


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    verbs = list(runs)
    print("| step (median ms) | " + " | ".join(f"bridge {v}" for v in verbs) + " |")
    print("|---|" + "---:|" * len(verbs))

    def median(verb: str, a: str, b: str) -> float:
        return statistics.median((t[b] - t[a]) * 1000 for t in runs[verb])

    for name, a, b in STEPS:
        print(f"| {name} | " + " | ".join(f"{median(v, a, b):.2f}" for v in verbs) + " |")
    total = {v: median(v, "spawn", "exit") for v in verbs}
    overhead = {v: statistics.median(
        ((t["exit"] - t["spawn"]) - (t["logged"] - t["call"])) * 1000 for t in runs[v])
        for v in verbs}
    print("| **total** | " + " | ".join(f"{total[v]:.2f}" for v in verbs) + " |")
    print("| **overhead** (total - the call itself) | " +
          " | ".join(f"**{overhead[v]:.2f}**" for v in verbs) + " |")
    print(f"\n{len(runs[verbs[0]])} samples per column, the servers alternated call by call; "
          "sparesN: a server with --spare-workers N (0: a worker forked at each call)")


def start_server(ours: Path, tmp: Path, mode: str) -> subprocess.Popen[bytes]:
    sock = tmp / f"{mode}.sock"
    with open(tmp / f"{mode}.log", "wb") as log:
        server = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX, str(ours / "cni-bridge"), "serve", "--socket",
             str(sock), "--spare-workers", mode.removeprefix("spares")], stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": PATH, "CNI_BRIDGE_STATE_DIR": str(tmp / "state")})
    deadline = time.monotonic() + 30
    while not sock.exists():
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("serve did not start: " + (tmp / f"{mode}.log").read_text())
        time.sleep(0.05)
    return server


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", default=str(REPO / "dist" / "cni"))
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--spares", default="0,2", metavar="N,N",
                   help="the servers to compare, by --spare-workers (default 0,2)")
    p.add_argument("--inner", nargs=2, metavar=("TMP", "PREFIX"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ours = Path(args.ours).resolve()
    MODES[:] = [f"spares{int(n)}" for n in args.spares.split(",")]
    if args.inner:
        print(json.dumps(inner(ours, Path(args.inner[0]), args.samples, args.inner[1])))
        return 0
    if os.geteuid() != 0:
        print("overhead.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    names = [PREFIX, *(f"{PREFIX}-c{n}" for n in range(4))]
    with tempfile.TemporaryDirectory(prefix="cniperf-ovh-") as tmp_name:
        tmp = Path(tmp_name)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            for name in names:
                subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", PREFIX, "link", "set", "lo", "up"], check=True)
            for mode in MODES:
                servers.append(start_server(ours, tmp, mode))
            out = subprocess.run(["ip", "netns", "exec", PREFIX, sys.executable, __file__,
                                  "--ours", str(ours), "--samples", str(args.samples),
                                  "--spares", args.spares,
                                  "--inner", str(tmp), PREFIX], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            report(json.loads(out))
        finally:
            for server in servers:
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=30)
            for name in names:
                subprocess.run(["ip", "netns", "del", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
