#!/usr/bin/env python3
"""The healer at scale: how long a restore of thousands of records takes, in how many
transactions, and whether a restore that keeps failing slows the calls served meanwhile.

    tests/perf/heal.py [--ours DIR] [--records 4000] [--backends nftables,iptables] [--window 45]

Needs root and the frozen build. In a throwaway namespace (``cniperf<pid>-serve``, removed on
exit; see serve.py) per backend:

1. scale: writes `--records` records (half bridge, half portmap: one masquerade entry or one
   published port each) straight into the namespace's record directory, starts
   ``cni-bridge serve`` (its start check restores them all), then flushes the firewall
   (``nft flush ruleset`` / ``iptables -t nat -F``) and waits for the next restore. Prints the
   server's own report of each (milliseconds, transactions, errors) and counts what is back;
2. failing restore (nftables): a bridge ADD and DEL of one container, served, again and again
   for `--window` seconds with a healthy firewall, then as long again after a record whose
   port conditions nft refuses is added and the ruleset flushed, from the moment the first
   restore after the flush failed, so that the server retries (backing off) meanwhile, then as
   long again once healthy (the record removed, SIGHUP). Prints the median served ADD with a
   healthy firewall (before and after: the machine's load drifts) and while restores failed,
   their ratio, the checks the server ran meanwhile and how often the failure was logged.

Not part of the test run (a timing is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.perf.serve import NETWORK, NS, REPO, Node, sh  # noqa: E402

FLUSH = {"nftables": ("nft", "flush", "ruleset"), "iptables": ("iptables", "-t", "nat", "-F")}
BAD_CONDITIONS = ["ip", "saddr", "@gone"]  # a set the flush removed: every restore fails


def address(i: int) -> str:
    return f"10.45.{i // 250}.{i % 250 + 2}/16"


def write_records(state: Path, backend: str, count: int) -> None:
    """`count` records of `count // 2` attachments, as their ADDs would have written them."""
    root = state / f"netns-{os.stat(f'/run/netns/{NS}').st_ino}" / "bulk"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count // 2):
        data = {"bridge": {"backend": backend, "masq": [{"address": address(i),
                                                         "subnet": "10.45.0.0/16"}]},
                "portmap": {"backend": backend, "options": {"snat": True}, "mappings": [
                    {"protocol": "tcp", "hostPort": 20000 + i, "containerIP": address(i),
                     "containerPort": 80}]}}
        for plugin, payload in data.items():
            doc = {"network": "bulk", "containerID": f"bulk{i}", "ifname": "eth0",
                   "plugin": plugin, "data": payload}
            (root / f"bulk{i}.eth0.{plugin}.json").write_text(json.dumps(doc))


def restored_count(backend: str) -> int:
    """Published ports back in the firewall."""
    if backend == "nftables":
        out = sh("ip", "netns", "exec", NS, "nft", "-j", "list", "map", "inet", "cni_bridge",
                 "hostport_any4", check=False).stdout
        if not out:
            return 0
        return sum(len(item["map"].get("elem", [])) for item in json.loads(out)["nftables"]
                   if "map" in item)
    out = sh("ip", "netns", "exec", NS, "iptables-save", "-t", "nat", check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("-A CNI-DN-"))


def wait_restore(node: Node, after: int, timeout: float = 300) -> dict[str, Any]:
    """The server's report of its first restore after `after` checks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = node.status() or {}
        last = answer.get("last_restore")
        if last is not None and answer.get("checks", 0) > after:
            return dict(last)
        time.sleep(0.2)
    raise RuntimeError("no restore within the timeout")


def wait_failed(node: Node, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = (node.status() or {}).get("health") or {}
        if health.get("failed"):
            return dict(health)
        time.sleep(0.1)
    raise RuntimeError("the restore did not fail")


def wait_healthy(node: Node, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = (node.status() or {}).get("health") or {}
        if health and not health.get("failed"):
            return
        time.sleep(0.1)
    raise RuntimeError("the server did not heal")


def describe(report: dict[str, Any]) -> str:
    return (f"{report.get('restored')} records in {report.get('ms')} ms, "
            f"{report.get('transactions')} transactions, {len(report.get('errors') or [])} "
            f"errors, failed: {report.get('failed')}")


def scale(ours: Path, backend: str, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cniperf-heal-") as tmp:
        node = Node(ours, Path(tmp))
        try:
            node.start(lambda: write_records(Path(tmp) / "state", backend, count))
            first = wait_restore(node, 0)
            print(f"{backend}: start check restored {describe(first)}; "
                  f"{restored_count(backend)} published ports back", flush=True)
            checks = (node.status() or {}).get("checks", 0)
            sh("ip", "netns", "exec", NS, *FLUSH[backend])
            flushed = time.monotonic()
            again = wait_restore(node, checks)
            print(f"{backend}: after {' '.join(FLUSH[backend])}: {describe(again)}; "
                  f"{restored_count(backend)} published ports back "
                  f"{time.monotonic() - flushed:.1f} s after the flush", flush=True)
        finally:
            node.stop()


def add_times(node: Node, seconds: float) -> list[float]:
    conf = {**node.conf, "bridge": "healperf0"}
    times: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.monotonic()
        node.call("bridge", "ADD", conf, "lat", f"/run/netns/{NS}-c")
        times.append((time.monotonic() - started) * 1000)
        node.call("bridge", "DEL", conf, "lat", f"/run/netns/{NS}-c")
    return times


def failing(ours: Path, count: int, window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="cniperf-heal-") as tmp:
        node = Node(ours, Path(tmp))
        sh("ip", "netns", "add", f"{NS}-c")
        try:
            node.start(lambda: write_records(Path(tmp) / "state", "nftables", count))
            wait_restore(node, 0)
            add_times(node, 1)  # warm
            normal = add_times(node, window)
            bad = {"network": NETWORK, "containerID": "bad", "ifname": "eth0",
                   "plugin": "portmap", "data": {
                       "backend": "nftables", "options": {"snat": True,
                                                          "conditionsV4": BAD_CONDITIONS},
                       "mappings": [{"protocol": "tcp", "hostPort": 30999,
                                     "containerIP": "10.44.200.2/16", "containerPort": 80}]}}
            netdir = Path(tmp) / "state" / f"netns-{os.stat(f'/run/netns/{NS}').st_ino}" / \
                NETWORK
            netdir.mkdir(parents=True, exist_ok=True)
            (netdir / "bad.eth0.portmap.json").write_text(json.dumps(bad))
            sh("ip", "netns", "exec", NS, "nft", "flush", "ruleset")
            first = wait_failed(node)
            print(f"the first restore after the flush: {describe(first)}", flush=True)
            checks = (node.status() or {}).get("checks", 0)
            started = time.monotonic()
            loaded = add_times(node, window)
            took = time.monotonic() - started
            answer = node.status() or {}
            logged = (Path(tmp) / "serve.log").read_text().count("cannot restore")
            # Healthy again (the culprit gone, a check asked for), and measured again: the
            # machine's load drifts, so normal is the mean of before and after.
            (netdir / "bad.eth0.portmap.json").unlink()
            assert node.server is not None
            node.server.send_signal(signal.SIGHUP)
            wait_healthy(node)
            normal += add_times(node, window)
            a, b = statistics.median(normal), statistics.median(loaded)
            print(f"served bridge ADD, median: {a:.1f} ms normal ({len(normal)} calls, before "
                  f"and after), {b:.1f} ms while restores failed ({len(loaded)} calls; "
                  f"{b / a:.2f}x); mean {statistics.mean(normal):.1f} / "
                  f"{statistics.mean(loaded):.1f} ms; {answer.get('checks', 0) - checks} "
                  f"checks in those {took:.1f} s, last failed: "
                  f"{(answer.get('health') or {}).get('failed')}; the failure logged "
                  f"{logged} time(s)", flush=True)
        finally:
            node.stop()
            sh("ip", "netns", "del", f"{NS}-c", check=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", default=str(REPO / "dist" / "cni"))
    p.add_argument("--records", type=int, default=4000)
    p.add_argument("--backends", default="nftables,iptables")
    p.add_argument("--window", type=float, default=45.0)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("heal.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    for backend in args.backends.split(","):
        scale(Path(args.ours), backend, args.records)
    if args.window:
        failing(Path(args.ours), args.records, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
