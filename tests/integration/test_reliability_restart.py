"""Restart and reload (USERS.md items 1 and 7).

(a) Simulated reboot: three containers attached (each with a port mapping), then everything a
    reboot loses is lost -- the container namespaces, the bridge, H's whole firewall (`nft flush
    ruleset`, which also empties the iptables-nft tables) -- while the host-local store stays on
    disk. GC with the runtime's valid list (empty, or one attachment re-added after the "boot")
    must release every stale reservation and leave nothing else behind, whether the runtime kept
    its result cache (libcni's synthesized DELs run too) or lost it (only the plugins' GC runs),
    and whether the plugins' records under /run were wiped (a real reboot) or survived.
(b) Firewall reload: after `nft flush ruleset` in H, `cni-bridge reconcile` (run in H) puts back
    every live attachment's masquerade and port rules, proved with real connections in both
    directions, on both backends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4, STATE_ENV
from tests.integration.test_reliability_common import BACKENDS, BRIDGE, World, make_world
from tests.netns import Netns, delete_netns, echo_server, probe

__all__ = ["make_world"]


def records_dir(world: World) -> Path:
    return Path(os.environ[STATE_ENV]) / f"netns-{os.stat(world.host.path).st_ino}"


def reboot(world: World, containers: list[Netns], wipe_records: bool, lose_cache: bool) -> None:
    """What a reboot loses; the host-local store (on disk) survives."""
    for ns in containers:
        delete_netns(ns)
    world.host.run("ip", "link", "del", BRIDGE)
    world.host.run("nft", "flush", "ruleset")
    assert world.host.run("nft", "list", "ruleset").stdout.strip() == ""
    if wipe_records:
        shutil.rmtree(records_dir(world))
    if lose_cache:
        shutil.rmtree(world.tmp / "cache")


@pytest.mark.parametrize(
    ("backend", "readd", "lose_cache", "wipe_records"),
    [("nftables", False, False, True), ("iptables", True, False, True),
     ("iptables", False, True, False), ("nftables", True, True, False)],
    ids=["none-valid,cache-kept,records-wiped", "one-readded,cache-kept,records-wiped",
         "none-valid,cache-lost,records-kept", "one-readded,cache-lost,records-kept"])
def test_gc_after_reboot_releases_every_stale_reservation(
        backend: str, readd: bool, lose_cache: bool, wipe_records: bool,
        make_world: Callable[..., World], netns: Callable[[str], Netns]) -> None:
    world = make_world(backend, subnet="10.98.0.0/28")
    containers = [netns(f"C{i}") for i in range(3)]
    for i, ns in enumerate(containers):
        world.add(world.rt(f"c{i}", ns, 8081 + i))
    assert len(world.reservations()) == 3
    reboot(world, containers, wipe_records, lose_cache)
    assert len(world.reservations()) == 3  # the store survived

    valid: list[tuple[str, str]] = []
    if readd:
        # A new sandbox after the boot: a new container ID (the same ID would be refused while
        # its stale reservation exists, as the reference's "duplicate allocation" rule says).
        again = world.rt("c0-boot2", netns("C0-boot2"), 8081)
        result = world.add(again)
        ip = result["ips"][0]["address"].split("/")[0]
        valid = [("c0-boot2", "eth0")]
    world.runtime.gc(world.conf, valid)

    assert world.store_problems() == []
    if readd:
        assert world.reservations() == {ip: "c0-boot2/eth0"}
        world.check(again)  # its addresses, veth and rules survived the GC
        assert len(world.records()) == 2  # bridge and portmap of c0-boot2, no stale one
        world.delete(again)
    world.assert_clean("after GC and the last DEL")


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconcile_restores_every_attachment_after_a_firewall_flush(
        backend: str, make_world: Callable[..., World], netns: Callable[[str], Netns],
        outside_ns: Netns) -> None:
    world = make_world(backend, subnet="10.97.0.0/28")
    containers = [netns(f"C{i}") for i in range(3)]
    rts = [world.rt(f"c{i}", ns, 8081 + i) for i, ns in enumerate(containers)]
    for rt in rts:
        world.add(rt)

    world.host.run("nft", "flush", "ruleset")
    assert not probe(outside_ns, "tcp", H_UPLINK_V4, 8081, timeout=1.0).ok

    env = {**os.environ, STATE_ENV: os.environ[STATE_ENV]}
    cli = str(world.plugin_dir / "cni-bridge")
    out = world.host.run(cli, "reconcile", env=env, timeout=60).stdout
    assert "6 record(s), 6 restored" in out, out

    for i, ns in enumerate(containers):
        with echo_server(ns, "tcp", 80) as server:
            assert probe(outside_ns, "tcp", H_UPLINK_V4, 8081 + i).ok, f"O -> H:{8081 + i}"
        assert server.peer == O_ETH0_V4  # the port mapping reached container i, unmasqueraded
        with echo_server(outside_ns, "tcp", 9000 + i) as server:
            assert probe(ns, "tcp", O_ETH0_V4, 9000 + i).ok, f"container {i} -> O"
        assert server.peer == H_UPLINK_V4  # masqueraded again
    again = world.host.run(cli, "reconcile", env=env, timeout=60).stdout
    assert "6 record(s), 0 restored" in again, again

    for rt in rts:
        world.check(rt)
        world.delete(rt)
    world.assert_clean("after reconcile and DEL of every attachment")
