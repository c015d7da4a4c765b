"""Crash consistency (USERS.md items 6 and 16): the plugin is killed with SIGKILL at a random
moment during ADD or DEL, of the bridge (with host-local in-process) or of portmap. The moment is
drawn from 0 to 1.1 times the time the same call takes uninterrupted on that host (measured
first, then rescaled by the time of every uninterrupted ADD and DEL, since the load changes; the
range is at least 0-300 ms), so kills land in start-up, in the middle of the work and,
in some trials, after the call finished. The kill goes to the plugin's whole process group, so
an `nft`/`iptables` child it was running dies too.

After every trial:
- the host-local store parses: no empty or partial reservation file, no unreadable cursor;
- a DEL through the runtime (with the cached result when the ADD had completed, without one when
  the ADD was killed) succeeds and leaves nothing: no reservation, no veth, no interface in the
  container, no masquerade or port entry, no record;
- the next ADD (with a port mapping) works.

CI size: 40 trials over 4 independent hosts. `CNI_BRIDGE_SOAK=long`: 400;
`CNI_BRIDGE_SOAK_TRIALS=N` sets the number; `CNI_BRIDGE_SOAK_SEED=N` repeats a run's draws.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conflist_runner import PATH, STATE_ENV, RuntimeConf, build_config
from tests.integration.test_reliability_common import LONG, World, make_world
from tests.netns import Netns

__all__ = ["make_world"]

TRIALS = int(os.environ.get("CNI_BRIDGE_SOAK_TRIALS", 0)) or (400 if LONG else 40)
HOSTS = 4
MAX_DELAY = 0.3
KINDS = ("bridge ADD", "bridge DEL", "portmap ADD", "portmap DEL")
SEED = int(os.environ.get("CNI_BRIDGE_SOAK_SEED", "0")) or int(time.time())


def killed_run(world: World, plugin: dict[str, Any], command: str, rt: RuntimeConf,
               prev: dict[str, Any] | None, delay: float) -> tuple[int, str, float]:
    """Start one plugin in H as the runtime would, SIGKILL its process group after `delay`
    seconds (unless it finished first); returns (exit status, stdout, seconds it ran)."""
    config = build_config(world.conf, plugin, prev, rt.capability_args)
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": rt.container_id, "CNI_NETNS": rt.netns,
           "CNI_ARGS": "", "CNI_IFNAME": rt.ifname, "CNI_PATH": str(world.plugin_dir),
           STATE_ENV: os.environ[STATE_ENV]}
    world.host.assert_not_root()
    argv = ["ip", "netns", "exec", world.host.name, "env", "-i", f"PATH={PATH}",
            *(f"{k}={v}" for k, v in env.items()), str(world.plugin_dir / plugin["type"])]
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, _ = proc.communicate(json.dumps(config).encode(), timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the plugin and any nft/iptables child it runs
        stdout, _ = proc.communicate(timeout=30)
    return proc.returncode, stdout.decode(), time.monotonic() - began


def calibrate(world: World, container: Netns) -> dict[str, float]:
    """How long each plugin call takes here, uninterrupted (kills are spread over that time)."""
    bridge, portmap = world.conf.plugins
    rt = world.rt("calibration", container, 29999)
    took = {}
    rc, out, took["bridge ADD"] = killed_run(world, bridge, "ADD", rt, None, 60)
    assert rc == 0, out
    prev = json.loads(out)
    rc, out, took["portmap ADD"] = killed_run(world, portmap, "ADD", rt, prev, 60)
    assert rc == 0, out
    rc, out, took["portmap DEL"] = killed_run(world, portmap, "DEL", rt, prev, 60)
    assert rc == 0, out
    rc, out, took["bridge DEL"] = killed_run(world, bridge, "DEL", rt, prev, 60)
    assert rc == 0, out
    world.assert_clean("after the calibration cycle")
    return took


def state_after_kill(world: World, rt: RuntimeConf, container: Netns) -> str:
    """Which traces the killed call left, for the coverage figures (e.g. "ip+veth+masq+rec")."""
    parts = []
    if any(owner.startswith(f"{rt.container_id}/") for owner in world.reservations().values()):
        parts.append("ip")
    if world.host_veths():
        parts.append("veth")
    if container_links(container):
        parts.append("ctr-if")
    leaks = world.firewall_leaks()
    port = str(rt.capability_args["portMappings"][0]["hostPort"])
    if any(port in line for line in leaks):
        parts.append("port")
    if any(port not in line for line in leaks):
        parts.append("masq")
    if world.records():
        parts.append("rec")
    return "+".join(parts) or "nothing"


def container_links(ns: Netns) -> list[str]:
    return [li["ifname"] for li in ns.ip_json("link", "show") if li["ifname"] != "lo"]


def run_trials(world: World, container: Netns, took: dict[str, float],
               trials: list[tuple[int, str, float]], outcomes: Counter[str],
               states: Counter[str]) -> None:
    """`trials`: (number, kind, fraction): the kill lands at `fraction` (0 to 1.1) of the time
    the call takes uninterrupted on this host (of MAX_DELAY when the call is quicker)."""
    bridge, portmap = world.conf.plugins
    # The load changes during the run (the other hosts, the rest of the machine): every
    # uninterrupted ADD and DEL through the runtime rescales the calibrated times.
    scale = 1.0
    adds, dels = took["bridge ADD"] + took["portmap ADD"], took["bridge DEL"] + took["portmap DEL"]

    def timed(verb: Callable[[RuntimeConf], object], rt: RuntimeConf, base: float) -> None:
        nonlocal scale
        began = time.monotonic()
        verb(rt)
        scale = (scale + (time.monotonic() - began) / base) / 2

    live: RuntimeConf | None = None
    for n, kind, fraction in trials:
        delay = fraction * max(took[kind] * scale, MAX_DELAY)
        plugin_name, command = kind.split()
        if command == "DEL":
            if live is None:
                live = world.rt(f"pre{n}", container, 30000 + n)
                timed(world.add, live, adds)
            rt = live
            prev = world.runtime.cached_result(world.conf.name, rt)
            plugin = bridge if plugin_name == "bridge" else portmap
        else:
            if live is not None:
                timed(world.delete, live, dels)
                live = None
            rt = world.rt(f"t{n}", container, 30000 + n)
            prev = None
            plugin = bridge
            if plugin_name == "portmap":  # the bridge's ADD completes, portmap's is killed
                rc, out, _ = killed_run(world, bridge, "ADD", rt, None, 60)
                assert rc == 0, out
                prev = json.loads(out)
                plugin = portmap
        rc, _, _ = killed_run(world, plugin, command, rt, prev, delay)
        outcomes[f"{kind}: {'killed' if rc == -signal.SIGKILL else f'rc={rc}'}"] += 1
        states[f"{kind}: {state_after_kill(world, rt, container)}"] += 1
        what = f"trial {n} ({kind} killed after {delay * 1000:.0f} ms, rc={rc})"

        assert world.store_problems() == [], what
        world.delete(rt)
        world.assert_clean(f"DEL after {what}")
        assert container_links(container) == [], what
        live = world.rt(f"next{n}", container, 31000 + n)
        timed(world.add, live, adds)
        result = world.runtime.cached_result(world.conf.name, live)
        assert result is not None, what
        ip = result["ips"][0]["address"].split("/")[0]
        assert world.reservations()[ip] == f"next{n}/eth0", what
    if live is not None:
        world.delete(live)
    world.assert_clean("after the last trial")


def test_kill_during_add_and_del(make_world: Callable[..., World],
                                 netns: Callable[[str], Netns]) -> None:
    rng = random.Random(SEED)
    trials = [(n, KINDS[n % len(KINDS)], rng.uniform(0, 1.1)) for n in range(TRIALS)]
    worlds = []
    for h in range(HOSTS):
        host = netns(f"H{h}")
        worlds.append((make_world("nftables" if h % 2 == 0 else "iptables", host=host),
                       netns(f"C{h}")))
    # Calibrated one host at a time; the hosts then run their trials side by side.
    took = [calibrate(world, container) for world, container in worlds]
    outcomes: Counter[str] = Counter()
    states: Counter[str] = Counter()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=HOSTS) as pool:
        futures = [pool.submit(run_trials, world, container, took[h], trials[h::HOSTS],
                               outcomes, states)
                   for h, (world, container) in enumerate(worlds)]
        for f in futures:
            f.result()
    print(f"\ncrash: {TRIALS} trials (seed {SEED}) in {time.monotonic() - began:.1f}s on "
          f"{HOSTS} hosts (nftables and iptables)\n  uninterrupted calls took (s): "
          f"{[{k: round(v, 2) for k, v in t.items()} for t in took]}"
          f"\n  outcomes: {dict(sorted(outcomes.items()))}"
          f"\n  left by the kill: {dict(sorted(states.items()))}")
    assert sum(outcomes.values()) == TRIALS
