#!/usr/bin/env python3
"""The first call after boot with socket activation: how long until the server answers.

    tests/perf/activation.py [--ours DIR] [--rounds 10]

Needs root and the frozen build. In a throwaway namespace (``cniperf<pid>-act``, removed on
exit), each round starts ``systemd-socket-activate`` (systemd's own LISTEN_FDS implementation)
on a fresh private socket, as ``cni-bridge.socket`` would listen, then either

- ``hello``: connects and sends a status HELLO, timing from the connect to the server's answer
  (the server is exec'd at the connect, loads everything, takes the socket, answers); or
- ``call``: runs a plugin call (bridge ADD of host-local only: STATUS of a bridge network) as
  the first call, timing it whole and reading the call log for where it ran; then the same
  call again, warm.

The plugins wait ``HELLO_TIMEOUT`` (2 s) for the server's ACCEPT; a first call is served when
the server starts within that, and runs standalone (before anything of it is sent) otherwise.
Not part of the test run (a timing is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from cni_bridge.serve import wire  # noqa: E402

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NS = f"cniperf{os.getpid()}-act"
ACTIVATE = "/usr/bin/systemd-socket-activate"


def activated(ours: Path, sock: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", NS, ACTIVATE, "--listen", str(sock),
            f"--setenv=PATH={PATH}", f"--setenv=CNI_BRIDGE_STATE_DIR={state}",
            str(ours / "cni-bridge"), "serve", "--socket", str(sock)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"systemd-socket-activate did not listen: {log.read_text()}")
        time.sleep(0.01)
    return proc


def first_hello(sock: Path) -> float:
    """ms from connect to the server's status answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        started = time.perf_counter()
        s.connect(str(sock))
        wire.send(s, wire.STATUS)
        answer = wire.recv(s)
        elapsed = (time.perf_counter() - started) * 1000
    assert answer.kind == wire.STATUS, answer
    return elapsed


def plugin_call(ours: Path, sock: Path, state: Path, log: Path) -> tuple[float, bool]:
    """ms of one bridge STATUS call, and whether the server ran it (call log)."""
    conf = {"cniVersion": "1.1.0", "name": "actperf", "type": "bridge", "bridge": "actperf0",
            "ipam": {"type": "host-local", "dataDir": str(state / "ipam"),
                     "ranges": [[{"subnet": "10.45.0.0/24"}]]}}
    env = [f"PATH={PATH}", f"CNI_BRIDGE_STATE_DIR={state}", f"CNI_BRIDGE_SOCKET={sock}",
           f"CNI_BRIDGE_LOG={log}", "CNI_COMMAND=STATUS", f"CNI_PATH={ours}"]
    before = len(log.read_text().splitlines()) if log.exists() else 0
    started = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", NS, "env", "-i", *env, str(ours / "bridge")],
                          input=json.dumps(conf), capture_output=True, text=True, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode:
        raise SystemExit(f"bridge STATUS failed: {proc.stdout} {proc.stderr}")
    lines = log.read_text().splitlines()[before:]
    assert len(lines) == 1, lines  # one execution
    return elapsed, bool(json.loads(lines[0])["served"])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def summary(name: str, values: list[float]) -> str:
    return (f"{name}: median {statistics.median(values):.0f} ms, min {min(values):.0f}, "
            f"max {max(values):.0f} ({len(values)} rounds)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", default=str(REPO / "dist" / "cni"))
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("activation.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    ours = Path(args.ours).resolve()
    hellos: list[float] = []
    firsts: list[float] = []
    warms: list[float] = []
    served = 0
    with tempfile.TemporaryDirectory(prefix="cniperf-act-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(["ip", "netns", "add", NS], check=True)
        try:
            for n in range(args.rounds):
                for mode in ("hello", "call"):
                    sock, state = tmp / f"{mode}{n}.sock", tmp / "state"
                    proc = activated(ours, sock, state, tmp / "serve.log")
                    try:
                        if mode == "hello":
                            hellos.append(first_hello(sock))
                            continue
                        ms, was_served = plugin_call(ours, sock, state, tmp / "calls.jsonl")
                        firsts.append(ms)
                        served += was_served
                        warms.append(plugin_call(ours, sock, state, tmp / "calls.jsonl")[0])
                    finally:
                        stop(proc)
        finally:
            subprocess.run(["ip", "netns", "del", NS], check=False)
    print(summary("first connect to the server's first answer", hellos))
    print(summary(f"first plugin call (bridge STATUS), {served} of {len(firsts)} served", firsts))
    print(summary("the same call once the server runs", warms))
    print(f"the plugins wait {wire.HELLO_TIMEOUT:g} s for the server's ACCEPT")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
