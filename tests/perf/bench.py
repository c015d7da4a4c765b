#!/usr/bin/env python3
"""Per-call cost of cni-bridge against the reference plugins, through a real libcni client.

    tests/perf/bench.py [--quick] [--ours DIR] [--levels 0,300,1000] [--samples N] [--phases]

Needs root. Standard library only. Everything happens in throwaway network namespaces named
``cniperf<pid>-...``: one "host" namespace H per implementation (so they share no rules), where
the plugins run, and container namespaces attached to it. H has no link to the outside, so no
packet can leave; all state (host-local dataDir, libcni cache, CNI_BRIDGE_STATE_DIR) lives in a
temp directory. Deleting the namespaces and the directory on exit, Ctrl-C included, removes it all
(``--sweep`` removes what a killed run left behind).

Implementations, measured side by side in one run, in rotating order for every sample:
  ref   /usr/lib/cni (the reference plugins; cniVersion <= 1.0.0, iptables)
  nft   our frozen bundle with its default firewall backend (nftables)
  ipt   our frozen bundle with ``ipMasqBackend``/``backend`` set to iptables
  srv   (``--serve``) our frozen bundle, default backend, every call handed to a resident
        ``cni-bridge serve`` started in its H (the others are told never to hand over)
Conflist (cniVersion 1.0.0, the reference's maximum): bridge (isGateway, ipMasq) + host-local +
portmap (snat), one TCP port mapping per container.

For each level L of containers already attached (each with its own mapping): median and p90 of
ADD, CHECK and DEL of one more container (a fresh namespace each time). At level 0 also: the
wall time of 20 concurrent ADDs (and whether they got distinct addresses) and the peak memory
(max RSS, as GNU time reports it) of one plugin process, run directly with the config libcni would
send.

Background containers each have their own interface (``b<N>``) in one shared namespace. By
default two are attached through the client and the rest are clones of the second one's state in
H (veths on the bridge, firewall rules and set elements, IPAM files, records; see clone.py), which
takes seconds instead of minutes; ``--populate real`` attaches them all through the client.

Output: a markdown table on stdout (also written with ``--out``), raw numbers with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # the repo: cni_bridge
import clone  # noqa: E402
import floor  # noqa: E402

from cni_bridge.admin.demo import interrupt, signals_handled  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PREFIX = f"cniperf{os.getpid()}-"
NETNS_DIR = "/run/netns"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK = "perfnet"
SUBNET = "10.88.0.0/16"
BRIDGE = "cniperf0"
CALL_TIMEOUT = 120.0
BG_PORT, SAMPLE_PORT, BURST_PORT = 10000, 40000, 50000
# The reference portmap (1.1.1) CHECK looks for an ip6tables chain its ADD never made for an
# IPv4-only container, so its CHECK fails with this after all other checks passed.
REF_CHECK_BUG = "could not check ipv6 dnat"


# ------------------------------------------------------------------------------------ worker
# The worker runs inside H (started through `ip netns exec`, which also gives it H's /sys) and
# times the processes it spawns: wall time from spawn to reaping, and, for calls that ask
# ("rss"), the peak RSS GNU time reports for the process. Not ru_maxrss from our own wait4: a
# process spawned by this (Python, ~23 MB) worker inherits its high-water mark at exec, so every
# plugin would seem to peak at the worker's size; GNU time forks the plugin from its own small
# image.
TIME = "/usr/bin/time"

def _spawn(call: dict[str, Any], tmp: str, n: int) -> tuple[int, list[str]]:
    files = []
    actions = []
    stdin = call.get("stdin")
    if stdin is not None:
        path = f"{tmp}/in.{n}"
        Path(path).write_text(stdin)
        actions.append((os.POSIX_SPAWN_OPEN, 0, path, os.O_RDONLY, 0))
    else:
        actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
    for fd, name in ((1, "out"), (2, "err")):
        path = f"{tmp}/{name}.{n}"
        files.append(path)
        actions.append((os.POSIX_SPAWN_OPEN, fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                        0o600))
    argv = call["argv"]
    if call.get("rss"):
        files.append(f"{tmp}/rss.{n}")
        argv = [TIME, "-f", "%M", "-o", files[-1], *argv]
    pid = os.posix_spawn(argv[0], argv, call["env"], file_actions=actions)
    return pid, files


def _collect(pid: int, files: list[str], started: float) -> dict[str, Any]:
    _, status, usage = os.wait4(pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    out, err = (Path(f).read_text(errors="replace") for f in files[:2])
    result = {"rc": os.waitstatus_to_exitcode(status), "ms": elapsed,
              "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000, "stdout": out,
              "stderr": err[-2000:]}
    if len(files) > 2:
        result["maxrss_kb"] = int(Path(files[2]).read_text().split()[-1])
    return result


def netns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # /proc/1 may be unreadable (inside a container)
        return None
    return st.st_dev, st.st_ino


def worker(forbidden: str) -> int:
    """Refuses to run in PID 1's namespace or in the driver's (passed as `forbidden`).
    Ignores Ctrl-C (the terminal sends it to the whole process group): the driver finishes its
    clean-up through this worker, then tells it to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mine = netns_id("/proc/self/ns/net")
    if mine is None or mine in (netns_id("/proc/1/ns/net"), tuple(json.loads(forbidden))):
        print(json.dumps({"fatal": "worker is in the machine's own namespace; refusing"}),
              flush=True)
        return 1
    tmp = tempfile.mkdtemp(prefix="cniperf-worker-")
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            if msg["op"] == "exit":
                break
            calls = msg["calls"]
            parallel = int(msg.get("parallel", 1))
            results: list[dict[str, Any] | None] = [None] * len(calls)
            started_all = time.perf_counter()
            running: dict[int, tuple[int, list[str], float]] = {}
            pending = list(enumerate(calls))
            while pending or running:
                while pending and len(running) < parallel:
                    i, call = pending.pop(0)
                    t0 = time.perf_counter()
                    pid, files = _spawn(call, tmp, i)
                    running[pid] = (i, files, t0)
                if parallel == 1:
                    pid = next(iter(running))
                else:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
                    assert info is not None
                    pid = info.si_pid
                i, files, t0 = running.pop(pid)
                results[i] = _collect(pid, files, t0)
            total = (time.perf_counter() - started_all) * 1000
            print(json.dumps({"results": results, "total_ms": total}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ------------------------------------------------------------------------------------ driver

def sh(*argv: str, check: bool = True,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=check)


class Worker:
    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).resolve()),
             "--worker", json.dumps(netns_id("/proc/self/ns/net"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={"PATH": PATH})

    def run(self, calls: Sequence[dict[str, Any]], parallel: int = 1) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": "run", "calls": list(calls),
                                          "parallel": parallel}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died")
        answer: dict[str, Any] = json.loads(line)
        if "fatal" in answer:
            raise RuntimeError(answer["fatal"])
        return answer

    def one(self, call: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.run([call])["results"][0]
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin
            self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Impl:
    key: str
    label: str
    plugin_dir: Path
    firewall: str | None  # our backend override ("iptables"), None = default
    populate: str | None = None  # overrides --populate for this implementation
    served: bool = False  # calls go through a resident server in H

    def conflist(self, data_dir: Path) -> dict[str, Any]:
        bridge: dict[str, Any] = {
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                     "dataDir": str(data_dir)},
        }
        portmap: dict[str, Any] = {"type": "portmap", "capabilities": {"portMappings": True},
                                   "snat": True}
        if self.firewall:
            bridge["ipMasqBackend"] = self.firewall
            portmap["backend"] = self.firewall
        return {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [bridge, portmap]}


def background(i: int) -> tuple[str, str, int]:
    """Container ID, ifname (in the shared background namespace) and host port of the i-th
    background container: fixed width, so clones of one have the same shape."""
    return f"bg-{i:06d}", f"b{i:06d}", BG_PORT + i


def mapping(port: int) -> dict[str, Any]:
    return {"hostPort": port, "containerPort": 80, "protocol": "tcp"}


@dataclass
class World:
    """One implementation's host namespace H, its state directories and its worker."""

    impl: Impl
    client: Path
    root: Path
    phases_log: Path | None
    namespaces: list[str] = field(default_factory=list)
    worker: Worker | None = None
    attached: int = 0
    samples: int = 0
    stage: str = "setup"  # what the calls are for, in the call log's file name
    template: clone.Template | None = None
    next_ip: ipaddress.IPv4Address = ipaddress.IPv4Address("0.0.0.0")

    @property
    def host(self) -> str:
        return f"{PREFIX}{self.impl.key}-H"

    @property
    def background(self) -> str:
        return f"{PREFIX}{self.impl.key}-bg"

    def add_netns(self, name: str) -> str:
        self.namespaces.append(name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return f"{NETNS_DIR}/{name}"

    def del_netns(self, path: str) -> None:
        name = path.rsplit("/", 1)[-1]
        sh("ip", "netns", "del", name)
        self.namespaces.remove(name)

    def call_log(self, level: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The call log's records of a level's sampled calls by (role, verb); {} if none."""
        path = self.phases_log.with_suffix(f".level{level}.jsonl") \
            if self.phases_log is not None else None
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                groups.setdefault((rec["role"], rec["verb"]), []).append(rec)
        return groups

    server: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        """Where the plugins hand their calls ("": never; only the served line has a server)."""
        return str(self.root / "serve.sock") if self.impl.served else ""

    def setup(self) -> None:
        for sub in ("conf", "cache", "ipam", "state"):
            (self.root / sub).mkdir(parents=True)
        conf = self.impl.conflist(self.root / "ipam")
        (self.root / "conf" / f"{NETWORK}.conflist").write_text(json.dumps(conf, indent=1))
        self.add_netns(self.host)
        self.add_netns(self.background)
        self.worker = Worker(self.host)
        if self.impl.served:
            self.start_server()

    def start_server(self) -> None:
        """`cni-bridge serve` in H, on the world's own socket."""
        cli = str(self.impl.plugin_dir / "cni-bridge")
        with open(self.root / "serve.log", "wb") as log:
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.host, cli, "serve", "--socket", self.socket],
                env={"PATH": PATH, "CNI_BRIDGE_STATE_DIR": str(self.root / "state")},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while sh(cli, "status", "--server", "--socket", self.socket, check=False).returncode:
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("cni-bridge serve did not start: "
                                   + (self.root / "serve.log").read_text())
            time.sleep(0.1)

    def server_state(self) -> dict[str, Any]:
        """The server's counters and its main process's memory."""
        cli = str(self.impl.plugin_dir / "cni-bridge")
        out = sh(cli, "status", "--server", "--json", "--socket", self.socket).stdout
        state: dict[str, Any] = json.loads(out)["server"]
        assert self.server is not None
        status = Path(f"/proc/{self.server.pid}/status").read_text()
        state["rss_kb"] = int(next(line.split()[1] for line in status.splitlines()
                                   if line.startswith("VmRSS:")))
        return state

    def env(self, container_id: str, ifname: str, port: int | None) -> dict[str, str]:
        env = {
            "PATH": PATH,
            "NETCONFPATH": str(self.root / "conf"),
            "CNI_PATH": str(self.impl.plugin_dir),
            "CNI_CACHE_DIR": str(self.root / "cache"),
            "CNI_IFNAME": ifname,
            "CNI_CONTAINERID": container_id,
            "CNI_BRIDGE_STATE_DIR": str(self.root / "state"),
            "CNI_BRIDGE_SOCKET": self.socket,
            "CAP_ARGS": json.dumps({"portMappings": [mapping(port)]} if port else {}),
        }
        if self.phases_log is not None:  # one file per phase of the run (level, burst...)
            env["CNI_BRIDGE_LOG"] = str(self.phases_log.with_suffix(f".{self.stage}.jsonl"))
        return env

    def client_call(self, verb: str, netns_path: str, container_id: str, ifname: str,
                    port: int | None) -> dict[str, Any]:
        return {"argv": [str(self.client), verb, NETWORK, netns_path],
                "env": self.env(container_id, ifname, port)}

    def tool(self, argv: list[str], stdin: str | None = None) -> str:
        """Run a tool in H; its stdout, or RuntimeError."""
        path = shutil.which(argv[0], path=PATH)
        if path is None:
            raise RuntimeError(f"{argv[0]} not found")
        assert self.worker
        res = require_ok(self.worker.one({"argv": [path, *argv[1:]], "env": {"PATH": PATH},
                                          "stdin": stdin}), " ".join(argv))
        out: str = res["stdout"]
        return out

    def cleanup(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.worker is not None:
            self.worker.close()
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def require_ok(result: dict[str, Any], what: str) -> dict[str, Any]:
    if result["rc"] != 0:
        raise RuntimeError(f"{what} failed (exit {result['rc']}): {result['stderr'].strip()}"
                           f"{result['stdout'].strip()}")
    return result


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="cniperf-"))
        self.worlds: list[World] = []
        self.times: dict[tuple[str, str, int], list[float]] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        self.load: list[tuple[float, float, float]] = []
        self.startup_ms: dict[str, list[float]] = {}  # VERSION by implementation, and "floor"
        self.floor = floor.ensure_floor() if "nft" in args.impls or "ipt" in args.impls \
            else None

    # -- set-up and tear-down ----------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        impls = {
            "ref": Impl("ref", "reference", Path(a.ref), None),
            "nft": Impl("nft", "ours (nftables)", Path(a.ours), None),
            "ipt": Impl("ipt", "ours (iptables)", Path(a.ours), "iptables"),
            "srv": Impl("srv", "ours (nftables, served)", Path(a.ours), None, served=True),
        }
        keys = a.impls.split(",") + (["srv"] if a.serve and "srv" not in a.impls else [])
        for key in keys:
            # "<impl>-real": the same implementation with its background attached by real ADDs
            # (a second host namespace, measured alternately with the first: checks the clones)
            base, _, how = key.partition("-")
            impl = impls[base]
            if how == "real":
                impl = Impl(key, f"{impl.label}, real ADDs", impl.plugin_dir, impl.firewall,
                            "real", impl.served)
            elif how:
                raise SystemExit(f"bench.py: unknown implementation {key}")
            # Our call log is always on: the report shows each role's in-process time.
            log_path = self.tmp / f"{key}.calls" if base != "ref" else None
            world = World(impl, Path(a.client), self.tmp / key, log_path)
            self.worlds.append(world)
            world.setup()

    def cleanup(self) -> None:
        for world in self.worlds:
            world.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- background population ---------------------------------------------------------------
    def populate(self, level: int) -> None:
        for world in self.worlds:
            if world.attached >= level:
                continue
            world.stage = f"populate{level}"
            t0 = time.monotonic()
            how = "real ADDs"
            if (world.impl.populate or self.args.populate) == "clone":
                try:
                    self.populate_clones(world, level)
                    how = "cloned state"
                except clone.CannotClone as exc:
                    print(f"  {world.impl.label}: cannot clone ({exc}); real ADDs",
                          file=sys.stderr)
            self.populate_real(world, level)
            print(f"  {world.impl.label}: {level} attached in {time.monotonic() - t0:.0f} s "
                  f"({how})", file=sys.stderr)
        if level and self.args.settle:
            # Populating writes thousands of files in seconds. Until the kernel has written
            # them back, every fsync (host-local's, ours: the reference never syncs) waits for a
            # journal commit of all that: 60-90 ms per ADD at 1,000 instead of ~1 ms. A node
            # that reached 1,000 containers did so over time; measure that node.
            os.sync()
            time.sleep(self.args.settle)

    def populate_real(self, world: World, level: int) -> list[dict[str, Any]]:
        if world.attached >= level:
            return []
        calls = [world.client_call("add", f"{NETNS_DIR}/{world.background}", *background(i))
                 for i in range(world.attached, level)]
        assert world.worker
        answer = world.worker.run(calls, parallel=self.args.populate_jobs)
        for i, (call, res) in enumerate(zip(calls, answer["results"], strict=True)):
            if res["rc"] != 0:  # a transient failure (lock, race): try once more, alone
                answer["results"][i] = require_ok(world.worker.one(call),
                                                  f"{world.impl.label} background ADD")
        world.attached = level
        results: list[dict[str, Any]] = answer["results"]
        return results

    def populate_clones(self, world: World, level: int) -> None:
        """Two real ADDs, then clones of the second one's state (see clone.py)."""
        roots = [world.root / "ipam", world.root / "state"]
        if world.template is None:
            if world.attached or level <= 2:
                return
            self.populate_real(world, 1)
            s0 = clone.snapshot(world.tool, roots, world.root)
            res = self.populate_real(world, 2)[0]
            s1 = clone.snapshot(world.tool, roots, world.root)
            ip = ipaddress.IPv4Interface(json.loads(res["stdout"])["ips"][0]["address"]).ip
            world.template = clone.Template.from_snapshots(s0, s1, *background(1)[:2], ip,
                                                           BG_PORT + 1)
            world.next_ip = ip + 1
        ipam_dir = world.root / "ipam" / NETWORK
        clones = []
        for i in range(world.attached, level):
            while (ipam_dir / str(world.next_ip)).exists():
                world.next_ip += 1
            cid, ifname, port = background(i)
            clones.append((i, world.next_ip, cid, ifname, port))
            world.next_ip += 1
        for start in range(0, len(clones), 500):
            clone.apply_clones(world.tool, world.template, clones[start:start + 500],
                               world.root, BRIDGE, world.background)
        # host-local continues after the last address handed out, as after real ADDs
        (ipam_dir / "last_reserved_ip.0").write_text(str(world.next_ip - 1))
        world.attached = level

    # -- measurements ------------------------------------------------------------------------
    def record(self, key: str, verb: str, level: int, ms: float) -> None:
        self.times.setdefault((key, verb, level), []).append(ms)

    def sample(self, world: World, level: int, keep: bool = True) -> None:
        k = world.samples
        world.samples += 1
        netns = world.add_netns(f"{PREFIX}{world.impl.key}-s{k}")
        cid = f"perf-{world.impl.key}-{k}"
        world.stage = f"level{level}" if keep else "warmup"
        port = SAMPLE_PORT + k
        assert world.worker
        for verb in ("add", "check", "del"):
            res = world.worker.one(world.client_call(verb, netns, cid, "eth0", port))
            if verb == "check" and res["rc"] != 0 and REF_CHECK_BUG in res["stderr"]:
                count = self.extra.setdefault(world.impl.key, {})
                count["check_bug"] = count.get("check_bug", 0) + 1
            else:
                require_ok(res, f"{world.impl.label} {verb.upper()} with {level} attached")
            if keep:
                self.record(world.impl.key, verb.upper(), level, res["ms"])
        world.del_netns(netns)

    def measure(self, level: int) -> None:
        n = self.args.samples
        for i in range(n + 1):  # round 0 warms caches and is not recorded
            order = self.worlds[i % len(self.worlds):] + self.worlds[:i % len(self.worlds)]
            for world in order:
                self.sample(world, level, keep=i > 0)

    def startup(self) -> None:
        """VERSION answered by each implementation, run directly (no client), and the floor:
        the same number of runs each, interleaved."""
        world = self.worlds[0]
        assert world.worker
        argv = {"floor": [str(self.floor)]} if self.floor else {}
        for w in self.worlds:
            argv.setdefault(w.impl.key.split("-")[0], [str(w.impl.plugin_dir / "bridge")])
        # the same executable as nft for VERSION (never handed over): ipt counts only without nft
        if "nft" in argv:
            argv.pop("ipt", None)
        argv.pop("srv", None)
        env = {"PATH": PATH, "CNI_COMMAND": "VERSION"}
        for i in range(max(10, 2 * self.args.samples) + 1):  # round 0 warms the page cache
            for key, cmd in argv.items():
                res = require_ok(world.worker.one({"argv": cmd, "env": env, "stdin": "{}"}),
                                 f"{key} VERSION")
                if i:
                    self.startup_ms.setdefault(key, []).append(res["ms"])

    def in_process(self, level: int) -> dict[str, dict[str, float]]:
        """Median in-process time (call log duration_ms) by implementation and role/verb."""
        out: dict[str, dict[str, float]] = {}
        for world in self.worlds:
            if groups := world.call_log(level):
                out[world.impl.key] = {
                    f"{role} {verb}": statistics.median(r["duration_ms"] for r in recs)
                    for (role, verb), recs in sorted(groups.items())}
        return out

    def burst(self) -> None:
        n = self.args.burst
        for world in self.worlds:
            world.stage = "burst"
            assert world.worker
            paths = [world.add_netns(f"{PREFIX}{world.impl.key}-p{j}") for j in range(n)]
            adds = [world.client_call("add", p, f"burst-{world.impl.key}-{j}", "eth0",
                                      BURST_PORT + j) for j, p in enumerate(paths)]
            answer = world.worker.run(adds, parallel=n)
            results = answer["results"]
            ok = [r for r in results if r["rc"] == 0]
            addresses = [ip["address"] for r in ok for ip in json.loads(r["stdout"])["ips"]]
            dels = [world.client_call("del", p, f"burst-{world.impl.key}-{j}", "eth0",
                                      BURST_PORT + j) for j, p in enumerate(paths)]
            del_answer = world.worker.run(dels, parallel=n)
            self.extra.setdefault(world.impl.key, {}).update({
                "burst_add_ms": answer["total_ms"], "burst_del_ms": del_answer["total_ms"],
                "burst_ok": len(ok), "burst_distinct": len(set(addresses)) == len(ok) == n,
                "burst_errors": [r["stderr"].strip()[:300] for r in results if r["rc"] != 0],
                "burst_del_failed": sum(r["rc"] != 0 for r in del_answer["results"]),
            })
            for p in paths:
                world.del_netns(p)

    def memory(self, level: int) -> None:
        """Peak RSS of one plugin process: each role run directly (not through the client) with
        the config libcni would send, for ADD then DEL of a fresh container."""
        for world in self.worlds:
            name = f"{PREFIX}{world.impl.key}-m{level}"
            netns = world.add_netns(name)
            conf = world.impl.conflist(world.root / "ipam")
            common = {"cniVersion": conf["cniVersion"], "name": conf["name"]}
            env = {"PATH": PATH, "CNI_CONTAINERID": f"mem-{world.impl.key}-{level}",
                   "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                   "CNI_PATH": str(world.impl.plugin_dir),
                   "CNI_BRIDGE_STATE_DIR": str(world.root / "state"),
                   "CNI_BRIDGE_SOCKET": world.socket}
            bridge_conf = {**conf["plugins"][0], **common}
            port_conf = {**conf["plugins"][1], **common,
                         "runtimeConfig": {"portMappings": [mapping(BURST_PORT + 999)]}}
            del port_conf["capabilities"]
            peak: dict[str, int] = {}
            res = self.direct(world, peak, env, "bridge", "ADD", bridge_conf)
            result = json.loads(res["stdout"])
            self.direct(world, peak, env, "portmap", "ADD", {**port_conf, "prevResult": result})
            self.direct(world, peak, env, "portmap", "DEL", {**port_conf, "prevResult": result})
            self.direct(world, peak, env, "bridge", "DEL", {**bridge_conf, "prevResult": result})
            # host-local alone: what a foreign bridge (or the reference's) would exec.
            ipam_env = {**env, "CNI_CONTAINERID": f"mem-ipam-{world.impl.key}-{level}"}
            for verb in ("ADD", "DEL"):
                self.direct(world, peak, ipam_env, "host-local", verb, bridge_conf)
            self.extra.setdefault(world.impl.key, {})[f"rss_kb@{level}"] = peak
            if world.server is not None:
                self.extra[world.impl.key][f"server@{level}"] = world.server_state()
            world.del_netns(netns)

    @staticmethod
    def direct(world: World, peak: dict[str, int], env: dict[str, str], role: str, verb: str,
               config: dict[str, Any]) -> dict[str, Any]:
        """Run one plugin directly; its max RSS goes into `peak`."""
        assert world.worker
        res = require_ok(world.worker.one({
            "argv": [str(world.impl.plugin_dir / role)], "env": {**env, "CNI_COMMAND": verb},
            "rss": True,
            "stdin": json.dumps(config)}), f"{world.impl.label} {role} {verb} (direct)")
        peak[f"{role} {verb}"] = res["maxrss_kb"]
        return res

    # -- report ------------------------------------------------------------------------------
    def stats(self, key: str, verb: str, level: int) -> tuple[float, float] | None:
        values = sorted(self.times.get((key, verb, level), []))
        if not values:
            return None
        p90 = values[max(0, -(-len(values) * 9 // 10) - 1)]  # nearest rank
        return statistics.median(values), p90

    def report(self) -> str:
        a = self.args
        keys = [w.impl.key for w in self.worlds]
        labels = {w.impl.key: w.impl.label for w in self.worlds}
        has_ref = "ref" in keys
        loads = ", ".join(f"{one:.1f}" for one, _, _ in self.load)
        lines = [
            f"Benchmark of {datetime.date.today().isoformat()} on {machine()}; load average "
            f"(1 min) during the run: {loads}.  ",
            f"Reference: {reference_version()}. Ours: {ours_version(Path(a.ours))}. Client: "
            f"{client_version()} (tests/perf/bench.py, populate: {a.populate}).  ",
            "Conflist: bridge (isGateway, ipMasq) + host-local + portmap (snat, one TCP mapping "
            f"per container), cniVersion 1.0.0; {a.samples} samples per cell, the "
            "implementations alternated.",
            "",
        ]
        head = "| call | containers attached |"
        rule = "|---|---:|"
        for k in keys:
            head += f" {labels[k]} median / p90 ms |"
            rule += "---:|"
            if k != "ref" and has_ref:
                head += " ratio |"
                rule += "---:|"
        lines += [head, rule]

        def ratio(mine: float, ref: float) -> str:
            return f"**{mine / ref:.2f}**" if ref else "-"

        for verb in ("ADD", "CHECK", "DEL"):
            for level in self.levels:
                row = f"| {verb} | {level} |"
                ref = self.stats("ref", verb, level) if has_ref else None
                for k in keys:
                    st = self.stats(k, verb, level)
                    row += f" {st[0]:.0f} / {st[1]:.0f} |" if st else " - |"
                    if k != "ref" and has_ref:
                        row += f" {ratio(st[0], ref[0])} |" if st and ref else " - |"
                lines.append(row)
        top = max(self.levels)
        if top:
            row = f"| ADD at {top} / ADD at 0 | |"
            for k in keys:
                hi, lo = self.stats(k, "ADD", top), self.stats(k, "ADD", 0)
                row += f" {hi[0] / lo[0]:.2f}x |" if hi and lo else " - |"
                if k != "ref" and has_ref:
                    row += " |"
            lines.append(row)
        if a.burst:
            row = f"| {a.burst} concurrent ADDs (wall) | 0 |"
            ref_ms = self.extra.get("ref", {}).get("burst_add_ms")
            for k in keys:
                e = self.extra.get(k, {})
                if "burst_add_ms" in e:
                    flag = "distinct IPs" if e["burst_distinct"] else \
                        f"**{e['burst_ok']}/{a.burst} ok, duplicates or failures**"
                    row += f" {e['burst_add_ms']:.0f} ({flag}) |"
                else:
                    row += " - |"
                if k != "ref" and has_ref:
                    row += f" {ratio(e['burst_add_ms'], ref_ms)} |" if ref_ms and e else " - |"
            lines.append(row)
            row = f"| {a.burst} concurrent DELs (wall) | 0 |"
            ref_ms = self.extra.get("ref", {}).get("burst_del_ms")
            for k in keys:
                e = self.extra.get(k, {})
                row += f" {e['burst_del_ms']:.0f} |" if "burst_del_ms" in e else " - |"
                if k != "ref" and has_ref:
                    row += f" {ratio(e['burst_del_ms'], ref_ms)} |" if ref_ms and e else " - |"
            lines.append(row)
        for level in sorted({int(k.split("@")[1]) for e in self.extra.values()
                             for k in e if k.startswith("rss_kb@")}):
            row = f"| peak RSS of one plugin process, MiB | {level} |"
            ref_peak = max(self.extra.get("ref", {}).get(f"rss_kb@{level}", {0: 0}).values())
            for k in keys:
                peak = self.extra.get(k, {}).get(f"rss_kb@{level}")
                row += f" {max(peak.values()) / 1024:.1f} |" if peak else " - |"
                if k != "ref" and has_ref:
                    row += f" {ratio(max(peak.values()), ref_peak)} |" if peak and ref_peak \
                        else " - |"
            lines.append(row)
        lines += self.server_rows(keys)
        if self.startup_ms:
            med = {k: statistics.median(v) for k, v in self.startup_ms.items()}
            row = "| VERSION, run directly (start-up) | - |"
            for k in keys:
                base = k.split("-")[0]
                v = med.get(base, med.get("nft") if base == "ipt" else None)
                row += f" {v:.1f} |" if v is not None else " - |"
                if k != "ref" and has_ref:
                    row += f" {ratio(v, med['ref'])} |" if v is not None and "ref" in med \
                        else " - |"
            lines.append(row)
            ours = med.get("nft", med.get("ipt"))
            if ours is not None and "floor" in med:
                lines += ["", f"Start-up floor: a do-nothing program frozen with our PyInstaller "
                          f"options starts in {med['floor']:.1f} ms (median of "
                          f"{len(self.startup_ms['floor'])}); ours answers VERSION in "
                          f"{ours:.1f} ms, floor + {ours - med['floor']:.1f} ms."]
        inner = self.in_process(0)
        for key, by_call in inner.items():
            label = next(w.impl.label for w in self.worlds if w.impl.key == key)
            lines += ["", f"In-process time of {label} at 0 attached (call log, median ms; "
                      "the rest of each call is start-up): " + ", ".join(
                          f"{call} {ms:.1f}" for call, ms in by_call.items()) + "."]
        if self.extra.get("ref", {}).get("check_bug"):
            lines += ["", "The reference's CHECK fails on every IPv4-only container (portmap "
                      f"1.1.1: \"{REF_CHECK_BUG}: chain ... not found\"); its time is that of "
                      "the failing call, which has done every other check first."]
        lines += ["", "Ratios are ours / reference (medians). Targets, standalone: VERSION "
                  "<= floor + 5 ms, ADD at 1000 <= 0.5 and <= 1.5x ours at 0; resident "
                  "(serve): ADD at 0 <= 0.8, DEL at 0 <= 0.35, ADD at 1000 <= 0.2, "
                  "20 concurrent ADDs <= 0.7; peak memory <= 40 MiB."]
        return "\n".join(lines) + "\n"

    def server_rows(self, keys: Sequence[str]) -> list[str]:
        """The resident server's own memory, and what it served, for the served line."""
        rows = []
        for key in keys:
            for name, state in sorted(self.extra.get(key, {}).items()):
                if name.startswith("server@"):
                    rows.append(f"| RSS of the resident server (main process), MiB | "
                                f"{name.split('@')[1]} | {state['rss_kb'] / 1024:.1f}, "
                                f"{state['served_total']} calls served, {state['lost']} lost |")
        return rows

    @property
    def levels(self) -> list[int]:
        return [int(x) for x in self.args.levels.split(",")]

    def phases(self) -> str:
        """Medians of our call log (CNI_BRIDGE_LOG): total and per phase, by role and verb, for
        each level's sampled calls."""
        out = []
        for world in self.worlds:
            for level in self.levels:
                groups = world.call_log(level)
                if not groups:
                    continue
                out.append(f"call log of {world.impl.label}, {level} attached "
                           "(medians, ms; in-process = after the interpreter and cli started):")
                for (role, verb), recs in sorted(groups.items()):
                    phases: dict[str, list[float]] = {}
                    for rec in recs:
                        for name, ms in rec.get("phases_ms", {}).items():
                            phases.setdefault(name, []).append(ms)
                    inner = statistics.median(r["duration_ms"] for r in recs)
                    detail = ", ".join(f"{n} {statistics.median(v):.1f}"
                                       for n, v in phases.items())
                    out.append(f"  {role:10s} {verb:6s} n={len(recs):3d} in-process "
                               f"{inner:6.1f}  [{detail}]")
        return "\n".join(out) + ("\n" if out else "")

    def run(self) -> None:
        self.setup()
        self.load.append(os.getloadavg())
        self.startup()
        for level in self.levels:
            self.populate(level)
            print(f"measuring with {level} attached", file=sys.stderr)
            self.measure(level)
            self.load.append(os.getloadavg())
            if level == 0:
                if self.args.burst:
                    self.burst()
                self.memory(level)
        if max(self.levels):
            self.memory(max(self.levels))
        self.load.append(os.getloadavg())


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), Linux {platform.release()}"


def reference_version() -> str:
    res = sh("dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins", check=False)
    return f"containernetworking-plugins {res.stdout.strip() or '?'} (Debian)"


def ours_version(plugin_dir: Path) -> str:
    res = sh(str(plugin_dir / "cni-bridge"), "version", check=False)
    shown = plugin_dir.resolve()
    if shown.is_relative_to(REPO):
        shown = shown.relative_to(REPO)  # the table goes into the README: no machine paths
    return (res.stdout.strip().splitlines() or ["cni-bridge ?"])[0] + f" ({shown})"


def client_version() -> str:
    res = sh("dpkg-query", "-W", "-f=${Version}", "golang-github-appc-cni-dev", check=False)
    return f"libcni {res.stdout.strip() or '?'}"


def find_client(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    built = REPO / "dist" / "tools" / "libcni-client"
    if built.exists():
        return built
    out = tmp / "libcni-client"
    print("building the libcni client", file=sys.stderr)
    subprocess.run(["go", "build", "-o", str(out), "./bats/libcni-client"], cwd=REPO, check=True,
                   env={**os.environ, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off",
                        "GOCACHE": str(tmp / "gocache")})
    return out


def sweep() -> None:
    """Remove namespaces left by benchmark runs whose process is gone."""
    for name in sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []:
        if not name.startswith("cniperf"):
            continue
        pid = name[len("cniperf"):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            sh("ip", "netns", "del", name, check=False)
            print(f"removed {name}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", default=str(REPO / "dist" / "cni"), help="our plugin directory")
    p.add_argument("--ref", default="/usr/lib/cni", help="reference plugin directory")
    p.add_argument("--client", help="libcni client (default dist/tools/libcni-client, "
                                    "built if missing)")
    p.add_argument("--impls", default="ref,nft,ipt",
                   help="subset of ref,nft,ipt; IMPL-real adds IMPL with real background ADDs")
    p.add_argument("--levels", default="0,300,1000", help="containers already attached")
    p.add_argument("--samples", type=int, default=15, help="samples per call and level")
    p.add_argument("--burst", type=int, help="concurrent ADDs (0: skip; default 20, --quick 5)")
    p.add_argument("--populate", choices=("clone", "real"), default="clone",
                   help="attach background containers by cloning one real ADD's state "
                        "(default; see clone.py) or by real ADDs through the client (slow)")
    p.add_argument("--populate-jobs", type=int, default=2, help="parallel background ADDs")
    p.add_argument("--serve", action="store_true",
                   help="add 'srv': ours through a resident cni-bridge serve in its H")
    p.add_argument("--quick", action="store_true", help="smoke size: levels 0,20, 3 samples, "
                                                        "burst 5 (unless --burst)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="after populating a level: sync, then wait this many seconds (default 5; "
                        "0: measure right away, with writeback still running)")
    p.add_argument("--phases", action="store_true",
                   help="also print per-phase medians of our call log (CNI_BRIDGE_LOG)")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--json", help="write the raw numbers here")
    p.add_argument("--sweep", action="store_true", help="only remove leftovers of killed runs")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.levels, args.samples = "0,20", 3
    if args.burst is None:
        args.burst = 5 if args.quick else 20
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if os.geteuid() != 0:
        print("bench.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.sweep:
        sweep()
        return 0
    for tool in ("ip", "nft", "iptables", TIME):
        if shutil.which(tool, path=PATH) is None:
            print(f"bench.py: {tool} is missing", file=sys.stderr)
            return 2
    ours_needed = args.serve or any(k in args.impls for k in ("nft", "ipt", "srv"))
    if ours_needed and not (Path(args.ours) / "bridge").exists():
        print(f"bench.py: no frozen plugins in {args.ours} (run build/build.sh)",
              file=sys.stderr)
        return 2
    bench = Bench(args)
    with signals_handled(interrupt):
        try:
            args.client = str(find_client(args.client, bench.tmp))
            started = time.monotonic()
            bench.run()
            table = bench.report()
            sys.stdout.write(table)
            if args.phases:
                sys.stdout.write("\n" + bench.phases())
            print(f"(run took {time.monotonic() - started:.0f} s)", file=sys.stderr)
            if args.out:
                Path(args.out).write_text(table)
            if args.json:
                Path(args.json).write_text(json.dumps({
                    "times": {f"{k}|{v}|{lv}": t for (k, v, lv), t in bench.times.items()},
                    "extra": bench.extra, "load": bench.load}, indent=1))
        except KeyboardInterrupt:
            print("bench.py: interrupted; cleaning up", file=sys.stderr)
            return 130
        except Exception:
            for world in bench.worlds:  # a resident server's log goes with the temp dir
                log = world.root / "serve.log"
                if log.exists():
                    print(f"bench.py: {world.impl.label}: the server's log (end):\n"
                          f"{log.read_text(errors='replace')[-6000:]}", file=sys.stderr)
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
            bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
