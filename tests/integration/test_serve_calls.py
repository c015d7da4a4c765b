"""Resident mode for real: the frozen executables hand their calls to ``cni-bridge serve`` running
in H (each test its own server and socket).

- Served calls give exactly what standalone calls give, for every role and verb, errors too,
  and are really served (call log, server counters).
- A caller falls back to running the call itself without a server, with a server of another
  build, and from another PID namespace.
- A call is never run twice: a worker killed mid-call gives the caller code 11 and the call is
  not run again; a server whose main process dies mid-call still completes the call; a caller
  killed mid-call (a runtime's timeout) stops its call, as without a server.
- Concurrent served ADDs get distinct addresses; served, standalone and the reference's
  host-local interleaved on one store keep it consistent.
"""

from __future__ import annotations

import copy
import fcntl
import json
import marshal
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.serve import wire
from tests.integration.conftest import SOCKET_ENV, STATE_ENV, RunPlugin
from tests.integration.test_serve_common import Resident, call_log, no_server_env, resident
from tests.netns import (
    PLUGIN_PATH,
    Netns,
    PluginRun,
    check_output_contract,
    plugin_env,
    wait_until,
)

__all__ = ["resident"]

NETWORK = "srvnet"
REFERENCE_HOST_LOCAL = "/usr/lib/cni/host-local"


def bridge_conf(data_dir: Path, version: str = "1.1.0", subnet: str = "10.61.0.0/24",
                **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": NETWORK, "type": "bridge", "bridge": "br-srv",
            "isGateway": True, "ipMasq": True, **extra,
            "ipam": {"type": "host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": subnet}]]}}


def normalised(doc: Any) -> Any:
    """An ADD result without what differs between two containers (MACs, veth names, netns
    paths, the address within the subnet)."""
    doc = copy.deepcopy(doc)
    for iface in doc.get("interfaces", []):
        iface["mac"] = "MAC"
        if iface["name"].startswith("veth"):
            iface["name"] = "VETH"
        if "sandbox" in iface:
            iface["sandbox"] = "NETNS"
    for ip in doc.get("ips", []):
        ip["address"] = "ADDR/" + ip["address"].split("/")[1]
    return doc


def every_verb(host: Netns, ns: Netns, run_plugin: RunPlugin, data_dir: Path, cid: str,
               env: dict[str, str]) -> list[Any]:
    """ADD, CHECK, portmap ADD/CHECK/DEL, host-local ADD/DEL, STATUS, GC, DEL and three bad
    calls; what each printed and returned, normalised."""
    conf = bridge_conf(data_dir)
    portmap = {"cniVersion": "1.1.0", "name": NETWORK, "type": "portmap",
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                   "protocol": "tcp"}]}}

    def call(plugin: str, verb: str, config: Any, **kw: Any) -> PluginRun:
        return run_plugin(host, plugin, verb, config, container_id=kw.pop("cid", cid),
                          netns=kw.pop("netns", ns), env=env, **kw)

    add = call("bridge", "ADD", conf)
    assert add.rc == 0, add
    runs = [add, call("bridge", "CHECK", {**conf, "prevResult": add.json})]
    with_prev = {**portmap, "prevResult": add.json}
    runs += [call("portmap", verb, with_prev) for verb in ("ADD", "CHECK", "DEL")]
    runs += [call("host-local", verb, conf, cid=f"{cid}-ipam") for verb in ("ADD", "DEL")]
    runs.append(call("bridge", "STATUS", conf, cid=None, netns=None, ifname=None))
    valid = [{"containerID": cid, "ifname": "eth0"}]
    runs.append(call("bridge", "GC", {**conf, "cni.dev/valid-attachments": valid}, cid=None,
                     netns=None, ifname=None))
    runs.append(call("bridge", "DEL", {**conf, "prevResult": add.json}))
    runs += [call("bridge", "ADD", "{not json"), call("bridge", "ADD", conf, cid=None),
             call("bridge", "ADD", {**conf, "name": "bad/name"})]
    return [(r.rc, normalised(r.json) if r.json else r.stdout) for r in runs]


def test_served_calls_give_what_standalone_calls_give(
        host_ns: Netns, netns: Callable[[str], Netns], run_plugin: RunPlugin,
        resident: Callable[..., Resident], tmp_path: Path) -> None:
    server = resident()
    log = tmp_path / "calls.jsonl"
    outcomes = {}
    for mode, env in (("served", {}), ("standalone", no_server_env())):
        outcomes[mode] = every_verb(host_ns, netns(f"C-{mode}"), run_plugin, tmp_path / "ipam",
                                    mode, {**env, "CNI_BRIDGE_LOG": str(log)})
    assert outcomes["served"] == outcomes["standalone"]
    assert [rc for rc, _ in outcomes["served"]] == [0] * 10 + [1] * 3

    lines = call_log(log)
    served = [(r["role"], r["verb"]) for r in lines if r["served"]]
    standalone = [(r["role"], r["verb"]) for r in lines if not r["served"]]
    assert served == standalone  # every call of the served half went through the server
    assert ("portmap", "CHECK") in served and ("host-local", "ADD") in served
    counters = server.served()
    assert sum(counters.values()) == 13  # the bad calls too (the server's dispatcher refused)
    assert counters["ADD"] == 6 and counters["GC"] == 1 and counters["STATUS"] == 1

    version = run_plugin(host_ns, "bridge", "VERSION", "", env={"CNI_BRIDGE_LOG": str(log)})
    assert version.rc == 0 and version.json["supportedVersions"]
    assert server.served() == counters  # VERSION runs in the executable itself


def plugin_argv(host: Netns, plugin_dir: Path, plugin: str, verb: str, cid: str, netns: str,
                extra: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()) -> list[str]:
    """`ip netns exec H [wrapper] env -i ... plugin` for a raw Popen."""
    env = {"PATH": PLUGIN_PATH, **plugin_env(verb, cid, netns, "eth0", "", str(plugin_dir)),
           **{k: os.environ[k] for k in (STATE_ENV, SOCKET_ENV) if k in os.environ},
           **(extra or {})}
    plugin_path = plugin if "/" in plugin else str(plugin_dir / plugin)
    return ["ip", "netns", "exec", host.name, *wrapper, "env", "-i",
            *(f"{k}={v}" for k, v in env.items() if v is not None), plugin_path]


def run_argv(argv: list[str], config: Any, timeout: float = 60) -> PluginRun:
    proc = subprocess.run(argv, input=json.dumps(config), capture_output=True, text=True,
                          timeout=timeout)
    doc = check_output_contract(proc.returncode, proc.stdout, proc.stderr, " ".join(argv[-1:]))
    return PluginRun(proc.returncode, proc.stdout, proc.stderr, doc)


def test_calls_run_standalone_without_a_server_of_this_build_or_from_another_pid_namespace(
        host_ns: Netns, netns: Callable[[str], Netns], run_plugin: RunPlugin,
        resident: Callable[..., Resident], plugin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    conf = bridge_conf(tmp_path / "ipam")
    env = {"CNI_BRIDGE_LOG": str(log)}
    c1 = netns("C1")
    nobody = run_plugin(host_ns, "bridge", "ADD", conf, container_id="c-none", netns=c1,
                        env={**env, SOCKET_ENV: str(tmp_path / "nobody.sock")})
    assert nobody.rc == 0, nobody

    other = tmp_path / "other-build"
    shutil.copytree(plugin_dir, other, symlinks=True)
    (other / "_internal" / "cni_bridge_build_digest").write_text("ffffffffffff\n")
    stranger = resident(bundle=other)
    c2 = netns("C2")
    mismatch = run_plugin(host_ns, "bridge", "ADD", conf, container_id="c-other", netns=c2,
                          env=env)
    assert mismatch.rc == 0, mismatch
    answer = stranger.status()
    assert answer is not None and answer["served_total"] == 0
    assert any("ffffffffffff" in reason for reason in answer["refused"]), answer["refused"]

    server = resident()
    c3 = netns("C3")
    argv = plugin_argv(host_ns, plugin_dir, "bridge", "ADD", "c-pidns", c3.path,
                       {"CNI_BRIDGE_LOG": str(log)},
                       wrapper=("unshare", "--pid", "--fork", "--mount-proc"))
    pidns = run_argv(argv, conf)
    assert pidns.rc == 0, pidns
    answer = server.status()
    assert answer is not None and answer["served_total"] == 0
    assert answer["refused"] == {"caller runs in another PID namespace": 1}
    assert [(r["container"], r["served"]) for r in call_log(log)] == [
        ("c-none", False), ("c-other", False), ("c-pidns", False)]


def test_a_caller_of_another_protocol_version_is_refused_by_name(
        resident: Callable[..., Resident]) -> None:
    """A plugin of an earlier build (protocol 1: CPython's marshal, no version byte) gets a
    refusal it cannot read, so it runs its call itself; the server says why."""
    server = resident()
    hello = marshal.dumps(("hello", 1, "call", "0e068f26f270", "bridge", "ADD"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.socket))
        sock.sendall(len(hello).to_bytes(4, "big") + hello)
        answer = wire.recv(sock)
    reason = f"caller speaks another protocol (version byte {hello[0]}, not {wire.VERSION})"
    assert (answer.kind, answer.text(0)) == (wire.REFUSE, reason)
    status = server.status()
    assert status is not None and status["served_total"] == 0
    assert status["refused"] == {reason: 1}


@contextmanager
def store_locked(data_dir: Path) -> Iterator[None]:
    """Hold host-local's lock on the network's store: an ADD waits for it (up to 10 s)."""
    store = data_dir / NETWORK
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / "lock", os.O_CREAT | os.O_RDONLY, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def opens(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (a worker inside host-local, at its lock)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def add_stuck_at_the_lock(server: Resident, argv: list[str], conf: dict[str, Any],
                          data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a served ADD while the store is locked; return once its worker is inside the call,
    waiting for the lock (the request was sent: the call is the server's)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf))
    proc.stdin.close()
    (call,) = server.in_flight()
    assert (call["role"], call["verb"]) == ("bridge", "ADD")
    wait_until(lambda: opens(call["worker"], data_dir / NETWORK / "lock"),
               "the worker to wait for the store's lock")
    return proc, call


def finish(proc: subprocess.Popen[str], what: str) -> tuple[int, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # stdin is closed already
    rc = proc.wait(timeout=30)
    return rc, check_output_contract(rc, out, err, what)


def test_a_call_is_never_run_twice(host_ns: Netns, netns: Callable[[str], Netns],
                                   resident: Callable[..., Resident], plugin_dir: Path,
                                   tmp_path: Path) -> None:
    data_dir, log = tmp_path / "ipam", tmp_path / "calls.jsonl"
    conf = bridge_conf(data_dir)
    server = resident()
    with store_locked(data_dir):
        argv = plugin_argv(host_ns, plugin_dir, "bridge", "ADD", "c-killed", netns("C1").path,
                           {"CNI_BRIDGE_LOG": str(log)})
        proc, call = add_stuck_at_the_lock(server, argv, conf, data_dir)
        os.kill(call["worker"], signal.SIGKILL)  # the worker, mid-call
        rc, error = finish(proc, "killed worker")
    assert rc == 1 and error["code"] == 11, error
    assert "went away during the call" in error["msg"]
    assert not (data_dir / NETWORK / "10.61.0.2").exists()  # not run again here
    assert call_log(log) == []  # neither by the killed worker nor by the executable
    assert server.status()["lost"] == 1  # type: ignore[index]

    c2 = netns("C2")
    with store_locked(data_dir):
        argv = plugin_argv(host_ns, plugin_dir, "bridge", "ADD", "c-orphan", c2.path,
                           {"CNI_BRIDGE_LOG": str(log)})
        proc, _ = add_stuck_at_the_lock(server, argv, conf, data_dir)
        os.kill(server.pid, signal.SIGKILL)  # the server's main process, mid-call
        server.proc.wait()  # type: ignore[union-attr]
    rc, result = finish(proc, "orphaned worker")
    assert rc == 0 and result["ips"][0]["address"] == "10.61.0.2/24", result
    assert [(r["container"], r["served"]) for r in call_log(log)] == [("c-orphan", True)]

    # The socket file is left, nobody answers: the next call runs standalone.
    delete = run_argv(plugin_argv(host_ns, plugin_dir, "bridge", "DEL", "c-orphan", c2.path,
                                  {"CNI_BRIDGE_LOG": str(log)}), {**conf, "prevResult": result})
    assert delete.rc == 0, delete
    assert call_log(log)[-1]["served"] is False
    assert not (data_dir / NETWORK / "10.61.0.2").exists()


def test_a_caller_killed_mid_call_takes_its_call_with_it(
        host_ns: Netns, netns: Callable[[str], Netns], resident: Callable[..., Resident],
        plugin_dir: Path, tmp_path: Path) -> None:
    """A runtime's timeout kills the plugin: the served call stops too, as a standalone one
    would, instead of finishing behind the runtime's back (and after its clean-up DEL)."""
    data_dir = tmp_path / "ipam"
    server = resident()
    argv = plugin_argv(host_ns, plugin_dir, "bridge", "ADD", "c-timeout", netns("C1").path)
    with store_locked(data_dir):
        proc, call = add_stuck_at_the_lock(server, argv, bridge_conf(data_dir), data_dir)
        proc.kill()  # the executable, as a runtime's timeout does
        proc.wait()
        wait_until(lambda: not (server.status() or {"in_flight": [1]})["in_flight"],
                   "the worker to stop with its caller")
    answer = server.status()
    assert answer is not None and (answer["abandoned"], answer["lost"]) == (1, 0), answer
    assert not (data_dir / NETWORK / "10.61.0.2").exists()  # the ADD did not go on alone
    assert not opens(call["worker"], data_dir / NETWORK / "lock")


def test_a_stopping_server_lets_calls_in_flight_finish(
        host_ns: Netns, netns: Callable[[str], Netns], resident: Callable[..., Resident],
        plugin_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "ipam"
    server = resident()
    argv = plugin_argv(host_ns, plugin_dir, "bridge", "ADD", "c-late", netns("C1").path)
    with store_locked(data_dir):
        proc, _ = add_stuck_at_the_lock(server, argv, bridge_conf(data_dir), data_dir)
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        wait_until(lambda: not server.socket.exists(), "the socket to go")
        assert server.proc.poll() is None  # type: ignore[union-attr]  # waiting for the call
    rc, result = finish(proc, "ADD in flight at stop")
    assert rc == 0 and result["ips"][0]["address"] == "10.61.0.2/24", result
    assert server.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
    assert "stopped" in server.output()


def test_a_server_stops_when_its_executable_is_replaced(
        host_ns: Netns, resident: Callable[..., Resident], plugin_dir: Path,
        tmp_path: Path) -> None:
    """An upgrade (``cni-bridge install``) replaces the executable: the old server stops, so
    that its supervisor starts the new build (plugins of a new build are never served by an
    old server; they run their calls themselves meanwhile)."""
    bundle = tmp_path / "installed"
    shutil.copytree(plugin_dir, bundle, symlinks=True)
    server = resident(bundle=bundle, args=["--check-interval", "0.2"])
    shutil.copy2(bundle / "cni-bridge", bundle / "cni-bridge.new")
    os.replace(bundle / "cni-bridge.new", bundle / "cni-bridge")
    assert server.proc.wait(timeout=20) == 0  # type: ignore[union-attr]
    assert "changed (an upgrade): stopping" in server.output()
    assert not server.socket.exists()


def test_concurrent_served_adds_get_distinct_addresses(
        host_ns: Netns, netns: Callable[[str], Netns], resident: Callable[..., Resident],
        plugin_dir: Path, tmp_path: Path) -> None:
    server = resident()
    conf = bridge_conf(tmp_path / "ipam")
    spaces = [netns(f"C{i}") for i in range(12)]
    procs = [subprocess.Popen(plugin_argv(host_ns, plugin_dir, "bridge", "ADD", f"c{i}",
                                          ns.path), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, ns in enumerate(spaces)]
    results = [p.communicate(json.dumps(conf), timeout=120) for p in procs]
    docs = [check_output_contract(p.returncode, out, err, f"ADD c{i}")
            for i, (p, (out, err)) in enumerate(zip(procs, results, strict=True))]
    assert all(p.returncode == 0 for p in procs), results
    addresses = [d["ips"][0]["address"] for d in docs]
    assert len(set(addresses)) == 12
    assert server.served() == {"ADD": 12}
    held = [f.read_bytes() for f in (tmp_path / "ipam" / NETWORK).iterdir()
            if f.name.startswith("10.")]
    assert sorted(held) == sorted(f"c{i}\r\neth0".encode() for i in range(12))


def test_a_mixed_node_keeps_one_consistent_store(
        host_ns: Netns, netns: Callable[[str], Netns], resident: Callable[..., Resident],
        plugin_dir: Path, tmp_path: Path) -> None:
    """Served bridge, standalone bridge, served host-local and the reference's host-local, all
    at once on one store: every address once, each file naming its holder; then all DELs."""
    if not os.access(REFERENCE_HOST_LOCAL, os.X_OK):
        pytest.skip("reference host-local not installed")
    resident()
    conf = bridge_conf(tmp_path / "ipam", version="1.0.0", subnet="10.62.0.0/26")
    kinds = [("bridge", {}), ("bridge", no_server_env()), ("host-local", {}),
             (REFERENCE_HOST_LOCAL, {})]
    calls = []
    for i in range(16):
        plugin, env = kinds[i % 4]
        ns = netns(f"C{i}").path if plugin == "bridge" else "/run/netns/cnit-unused"
        calls.append((plugin, env, f"m{i}", ns))

    def spawn(verb: str) -> list[PluginRun]:
        procs = [(subprocess.Popen(plugin_argv(host_ns, plugin_dir, plugin, verb, cid, ns, env),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True), cid)
                 for plugin, env, cid, ns in calls]
        runs = []
        for proc, cid in procs:
            out, err = proc.communicate(json.dumps(conf), timeout=120)
            runs.append(PluginRun(proc.returncode, out, err,
                                  check_output_contract(proc.returncode, out, err, cid)))
        return runs

    adds = spawn("ADD")
    assert all(r.rc == 0 for r in adds), [r.stderr for r in adds if r.rc]
    got = {cid: r.json["ips"][0]["address"].split("/")[0]
           for (_, _, cid, _), r in zip(calls, adds, strict=True)}
    assert len(set(got.values())) == 16
    store = tmp_path / "ipam" / NETWORK
    for cid, ip in got.items():
        assert (store / ip).read_bytes() == f"{cid}\r\neth0".encode()
    dels = spawn("DEL")
    assert all(r.rc == 0 for r in dels), [r.stderr for r in dels if r.rc]
    assert sorted(f.name for f in store.iterdir()) == ["last_reserved_ip.0", "lock"]
