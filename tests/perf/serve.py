#!/usr/bin/env python3
"""Resident mode over time: the server's memory across many calls, and how fast it heals.

    tests/perf/serve.py [--ours DIR] [--calls 10000] [--jobs 2] [--heals 10]

Needs root and the frozen build. In a throwaway namespace (``cniperf<pid>-serve``, removed on
exit) it starts ``cni-bridge serve`` on a private socket, then:

1. memory: runs `--calls` served plugin calls through the frozen executables (host-local ADD and
   DEL of one address per call pair, bridge STATUS, and a status query every 100 calls), `--jobs`
   at a time, and prints the server's RSS (VmRSS of its main process) after 100, 1,000, ... calls;
2. healing: attaches one container with a published port through served calls, then `--heals`
   times flushes the whole ruleset (``nft flush ruleset``) and times how long until the port's
   DNAT element is back in our table (polled every 10 ms with ``nft``).

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NS = f"cniperf{os.getpid()}-serve"
NETWORK = "srvperf"


def sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kw)


class Node:
    def __init__(self, ours: Path, tmp: Path) -> None:
        self.ours, self.tmp = ours, tmp
        self.socket = str(tmp / "serve.sock")
        self.env = {"PATH": PATH, "CNI_BRIDGE_STATE_DIR": str(tmp / "state"),
                    "CNI_BRIDGE_SOCKET": self.socket, "CNI_PATH": str(ours)}
        self.conf = {"cniVersion": "1.1.0", "name": NETWORK, "type": "bridge",
                     "bridge": "srvperf0", "isGateway": True, "ipMasq": True,
                     "ipam": {"type": "host-local", "dataDir": str(tmp / "ipam"),
                              "ranges": [[{"subnet": "10.44.0.0/16"}]]}}
        self.server: subprocess.Popen[bytes] | None = None

    def start(self, prepare: Callable[[], None] | None = None) -> None:
        """Make the namespace, run `prepare` (e.g. write records), start the server."""
        sh("ip", "netns", "add", NS)
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        if prepare is not None:
            prepare()
        with open(self.tmp / "serve.log", "wb") as log:
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", NS, str(self.ours / "cni-bridge"), "serve", "--socket",
                 self.socket], env={"PATH": PATH, "CNI_BRIDGE_STATE_DIR": self.env[
                     "CNI_BRIDGE_STATE_DIR"]}, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.status() is None:
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start: " + (self.tmp / "serve.log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=30)
        sh("ip", "netns", "del", NS, check=False)

    def status(self) -> dict[str, Any] | None:
        out = sh(str(self.ours / "cni-bridge"), "status", "--server", "--json", "--socket",
                 self.socket, check=False).stdout
        answer: dict[str, Any] | None = json.loads(out)["server"] if out else None
        return answer

    def rss_kb(self) -> int:
        assert self.server is not None
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def call(self, role: str, verb: str, config: dict[str, Any], cid: str = "",
             netns: str = "", ifname: str = "eth0") -> dict[str, Any] | None:
        env = {**self.env, "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname}
        proc = sh("ip", "netns", "exec", NS, "env", "-i",
                  *(f"{k}={v}" for k, v in env.items()), str(self.ours / role),
                  input=json.dumps(config), check=False)
        if proc.returncode:
            raise RuntimeError(f"{role} {verb} {cid}: {proc.stdout} {proc.stderr}")
        doc: dict[str, Any] | None = json.loads(proc.stdout) if proc.stdout.strip() else None
        return doc


def memory(node: Node, calls: int, jobs: int) -> None:
    marks = sorted({m for m in (100, 1000, 2000, 5000, calls) if m <= calls})

    def one(i: int) -> None:
        if i % 3 == 2:
            node.call("bridge", "STATUS", node.conf)
            return
        cid = f"m{i // 3}"
        node.call("host-local", "ADD" if i % 3 == 0 else "DEL", node.conf, cid,
                  "/run/netns/unused")

    done = 0
    print(f"server RSS after start: {node.rss_kb() / 1024:.1f} MiB", flush=True)
    started = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        for mark in marks:
            batch = range(done, mark)
            for start in range(batch.start, batch.stop, 300):
                list(pool.map(one, range(start, min(start + 300, batch.stop))))
                node.status()  # status answers allocate too
            done = mark
            answer = node.status() or {}
            print(f"server RSS after {mark:6d} calls: {node.rss_kb() / 1024:.2f} MiB "
                  f"({answer.get('served_total')} served, {answer.get('lost')} lost, "
                  f"{time.monotonic() - started:.0f} s)", flush=True)


def heals(node: Node, rounds: int) -> None:
    sh("ip", "netns", "add", f"{NS}-c")
    try:
        result = node.call("bridge", "ADD", node.conf, "heal", f"/run/netns/{NS}-c")
        portmap = {"cniVersion": "1.1.0", "name": NETWORK, "type": "portmap",
                   "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                       "protocol": "tcp"}]},
                   "prevResult": result}
        node.call("portmap", "ADD", portmap, "heal", f"/run/netns/{NS}-c")

        def restored() -> bool:
            out = sh("ip", "netns", "exec", NS, "nft", "list", "map", "inet", "cni_bridge",
                     "hostport_any4", check=False).stdout
            return "8080" in out

        times = []
        for _ in range(rounds):
            sh("ip", "netns", "exec", NS, "nft", "flush", "ruleset")
            flushed = time.monotonic()
            while not restored():
                if time.monotonic() - flushed > 30:
                    raise RuntimeError("not restored within 30 s")
                time.sleep(0.01)
            times.append((time.monotonic() - flushed) * 1000)
            time.sleep(0.3)
        reports = (node.status() or {}).get("last_restore") or {}
        print(f"restored after nft flush ruleset: median {statistics.median(times):.0f} ms, "
              f"max {max(times):.0f} ms over {rounds} flushes (polled every 10 ms); the "
              f"server's own last restore took {reports.get('ms')} ms")
    finally:
        sh("ip", "netns", "del", f"{NS}-c", check=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", default=str(REPO / "dist" / "cni"))
    p.add_argument("--calls", type=int, default=10000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--heals", type=int, default=10)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("serve.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cniperf-serve-") as tmp:
        node = Node(Path(args.ours), Path(tmp))
        try:
            node.start()
            if args.heals:
                heals(node, args.heals)
            if args.calls:
                memory(node, args.calls, args.jobs)
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
