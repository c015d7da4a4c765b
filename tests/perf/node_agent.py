#!/usr/bin/env python3
"""The node agent in a 100-node cluster: memory, CPU and how fast routes follow the API.

    tests/perf/node_agent.py [--ours DIR] [--nodes 100] [--events 1000] [--json FILE]

Needs root and the frozen build. Two throwaway namespaces (``cniperf<pid>-N``, the node, and
``cniperf<pid>-U``, the network with the Kubernetes API double; removed on exit) joined by a
veth on 198.18.0.0/16, where every node's InternalIP is on-link. The double serves `--nodes`
nodes (this one and N-1 others, one /24 pod CIDR each); the agent (the frozen
``cni-bridge node-agent``) runs in N. Then:

1. start-up: seconds from start until the ready file exists and every route is in place;
2. events: `--events` watch events in bursts of ten: nine MODIFIED events that change nothing
   the agent acts on (a label, as node heartbeats do) and one that moves a node's InternalIP.
   For each move, the time from the API change to the new route in the node's kernel table
   (seen by ``ip -ts monitor route`` in N);
3. the agent's RSS (VmRSS and peak VmHWM) and CPU time (user+system) after start-up and after
   the events.

Not part of the test run (a timing is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.netns import Netns, wait_until  # noqa: E402
from tests.node_agent_harness import (  # noqa: E402
    AgentProcess,
    ApiDouble,
    agent_routes,
    kubeconfig,
)

PREFIX = f"cniperf{os.getpid()}-"
API = "198.18.255.1:6443"


def node_ip(i: int, generation: int = 0) -> str:
    return f"198.18.{generation}.{i + 1}"


def make_nodes(count: int) -> list[dict[str, Any]]:
    return [{"name": f"node-{i:03d}", "podCIDRs": [f"10.244.{i}.0/24"],
             "internalIPs": [node_ip(i)]} for i in range(count)]


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mib": kib["VmRSS"] / 1024, "peak_mib": kib["VmHWM"] / 1024,
            "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


class RouteMonitor:
    """``ip monitor route`` in the node: when each route destination/gateway pair appeared."""

    def __init__(self, ns: Netns) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(["ip", "-n", ns.name, "monitor", "route"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            m = re.match(r"^(\S+) via (\S+) dev \S+ proto 147", line)
            if m:
                with self.lock:
                    self.seen.setdefault((m[1], m[2]), now)

    def when(self, dst: str, gateway: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if (dst, gateway) in self.seen:
                    return self.seen[(dst, gateway)]
            time.sleep(0.002)
        raise TimeoutError(f"route {dst} via {gateway} never appeared")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def make_namespaces() -> tuple[Netns, Netns]:
    """N (the node) and U (the network, where the API double runs), on one 198.18.0.0/16."""
    node, under = Netns(f"{PREFIX}N"), Netns(f"{PREFIX}U")
    for ns in (node, under):
        subprocess.run(["ip", "netns", "add", ns.name], check=True)
        ns.run("ip", "link", "set", "lo", "up")
    node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
             under.name)
    node.run("ip", "link", "set", "eth0", "up")
    under.run("ip", "link", "set", "eth0", "up")
    node.run("ip", "addr", "add", f"{node_ip(0)}/16", "dev", "eth0")
    under.run("ip", "addr", "add", "198.18.255.1/16", "dev", "eth0")
    return node, under


def move_nodes(api: ApiDouble, monitor: RouteMonitor, count: int, events: int) -> list[float]:
    """`events` events in bursts of ten (nine heartbeats, one InternalIP move); per move the
    seconds until its new route is in the kernel."""
    convergence = []
    rng = random.Random(7)
    for burst in range(events // 10):
        busy = rng.randrange(1, count)
        api.ctl("POST", "/churn", {"name": f"node-{busy:03d}", "count": 9})
        moved = rng.randrange(1, count)
        new_ip = node_ip(moved, 1 + burst % 200)
        sent = time.monotonic()
        api.upsert(f"node-{moved:03d}", [f"10.244.{moved}.0/24"], [new_ip])
        convergence.append(monitor.when(f"10.244.{moved}.0/24", new_ip) - sent)
        with monitor.lock:  # the same address may come back in a later burst
            monitor.seen.pop((f"10.244.{moved}.0/24", new_ip), None)
    return sorted(convergence)


def run(ours: Path, count: int, events: int, tmp: Path) -> dict[str, Any]:
    node, under = make_namespaces()
    api = ApiDouble(under, tmp, API, make_nodes(count), "--history", str(events * 2))
    monitor = RouteMonitor(node)
    agent = None
    try:
        start = time.monotonic()
        agent = AgentProcess(node, ours, tmp, "--node-name", "node-000", "--kubeconfig",
                             str(kubeconfig(tmp / "kubeconfig", api.server)), "--conf-dir",
                             str(tmp / "net.d"), "--ready-file", str(tmp / "ready"))
        expected = {f"10.244.{i}.0/24": node_ip(i) for i in range(1, count)}
        wait_until(lambda: (tmp / "ready").exists() and agent_routes(node) == expected,
                   "start-up", 60)
        startup_s = time.monotonic() - start
        after_start = proc_stats(agent.proc.pid)
        convergence = move_nodes(api, monitor, count, events)
        time.sleep(1)
        after_events = proc_stats(agent.proc.pid)
        log = agent.log
    finally:
        if agent is not None:
            agent.stop()
        monitor.stop()
        api.stop()
        for ns in (node, under):
            subprocess.run(["ip", "netns", "del", ns.name], check=False)
    return {
        "nodes": count, "events": events, "startup_s": round(startup_s, 3),
        "after_start": after_start, "after_events": after_events,
        "cpu_events_s": round(after_events["cpu_s"] - after_start["cpu_s"], 3),
        "convergence_ms": {
            "n": len(convergence),
            "median": round(statistics.median(convergence) * 1000, 1),
            "p90": round(convergence[int(len(convergence) * 0.9) - 1] * 1000, 1),
            "max": round(convergence[-1] * 1000, 1)},
        "log_lines": log.count("\n"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ours", type=Path, default=REPO / "dist" / "cni")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--json", type=Path)
    opts = p.parse_args()
    if os.geteuid() != 0:
        print("node_agent.py needs root", file=sys.stderr)
        return 1
    if not 2 <= opts.nodes <= 250 or opts.events < 10:
        print("--nodes 2..250 and --events at least 10", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cniperf-agent-") as tmp:
        result = run(opts.ours.resolve(), opts.nodes, opts.events, Path(tmp))
    c, s, e = result["convergence_ms"], result["after_start"], result["after_events"]
    print(f"node agent, {result['nodes']} nodes, {result['events']} events "
          f"({time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.2f})")
    print("| measure | value |\n|---|---|")
    print(f"| start-up to ready, all routes | {result['startup_s']:.2f} s |")
    print(f"| RSS after start-up (peak) | {s['rss_mib']:.1f} MiB ({s['peak_mib']:.1f}) |")
    print(f"| RSS after the events (peak) | {e['rss_mib']:.1f} MiB ({e['peak_mib']:.1f}) |")
    print(f"| CPU: start-up / the {result['events']} events | {s['cpu_s']:.2f} s / "
          f"{result['cpu_events_s']:.2f} s |")
    print(f"| route convergence after an InternalIP change (n={c['n']}) | median "
          f"{c['median']} ms, p90 {c['p90']} ms, max {c['max']} ms |")
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
