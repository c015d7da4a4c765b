"""What only a resident server can do: heal the node after a firewall reload, and answer
``cni-bridge status`` from memory.

After ``nft flush ruleset`` (nftables backend) or ``iptables -t nat -F`` (iptables backend) in H,
the server notices (nftables notifications) and puts back every recorded rule by itself: a
published port answers again from the outside namespace, moving bytes, and the containers'
traffic is masqueraded again. How long that took is printed (never asserted: timings are noisy
on a shared machine; tests/perf measures them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import H_UPLINK_V4, O_ETH0_V4, SOCKET_ENV, STATE_ENV
from tests.integration.test_reliability_common import BACKENDS, World, make_world
from tests.integration.test_serve_common import Resident, resident, wait_for
from tests.netns import PLUGIN_PATH, Netns, echo_server, probe

__all__ = ["make_world", "resident"]

RELOADS = {"nftables": ("nft", "flush", "ruleset"), "iptables": ("iptables", "-t", "nat", "-F")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_published_port_answers_again_after_a_firewall_flush(
        backend: str, make_world: Callable[..., World], netns: Callable[[str], Netns],
        outside_ns: Netns, resident: Callable[..., Resident]) -> None:
    server = resident()
    world = make_world(backend, subnet="10.96.0.0/28")
    containers = [netns(f"C{i}") for i in range(2)]
    rts = [world.rt(f"c{i}", ns, 8081 + i) for i, ns in enumerate(containers)]
    for rt in rts:
        world.add(rt)
    assert server.served() == {"ADD": 4}  # bridge and portmap of each

    world.host.run(*RELOADS[backend])
    with echo_server(containers[0], "tcp", 80) as port_server:
        took = wait_for(lambda: probe(outside_ns, "tcp", H_UPLINK_V4, 8081, timeout=0.3).ok,
                        "the published port to answer again", 15)
    assert port_server.peer == O_ETH0_V4  # DNAT, unmasqueraded, as before the flush
    print(f"{backend}: port answered again {took * 1000:.0f} ms after the flush")
    with echo_server(outside_ns, "tcp", 9001) as egress:
        assert probe(containers[1], "tcp", O_ETH0_V4, 9001).ok
    assert egress.peer == H_UPLINK_V4  # masqueraded again

    answer = server.status()
    assert answer is not None and answer["last_restore"] is not None, answer
    restore = answer["last_restore"]
    assert restore["trigger"] == f"change: {backend}" and restore["restored"] == 4
    assert restore["remaining"] == [] and restore["errors"] == []
    for rt in rts:
        world.check(rt)  # every rule of every attachment is back, not only the skeleton
        world.delete(rt)
    world.assert_clean("after the restore and DEL of every attachment")


def test_a_table_deleted_and_made_again_at_once_is_still_restored(
        make_world: Callable[..., World], netns: Callable[[str], Netns], outside_ns: Netns,
        resident: Callable[..., Resident]) -> None:
    """An ADD right after a reload recreates the skeleton (empty maps, chains) before the
    check runs: the skeleton looks whole but every other attachment's entries are gone. Here
    one transaction deletes our table and makes its skeleton again without elements."""
    server = resident()
    world = make_world("nftables", subnet="10.96.0.0/28")
    container = netns("C0")
    rt = world.rt("c0", container, 8081)
    world.add(rt)
    skeleton = world.host.run("nft", "-t", "list", "table", "inet", "cni_bridge").stdout
    world.host.run("nft", "-f", "-", input="delete table inet cni_bridge\n" + skeleton)
    assert "8081" not in world.host.run("nft", "list", "map", "inet", "cni_bridge",
                                        "hostport_any4").stdout
    with echo_server(container, "tcp", 80):
        wait_for(lambda: probe(outside_ns, "tcp", H_UPLINK_V4, 8081, timeout=0.3).ok,
                 "the published port to answer again", 15)
    restore = (server.status() or {})["last_restore"]
    assert restore["missing"] == ["nftables: a table was deleted"], restore
    world.check(rt)
    world.delete(rt)


def test_status_answers_from_the_server(make_world: Callable[..., World],
                                        netns: Callable[[str], Netns],
                                        resident: Callable[..., Resident],
                                        tmp_path: Path) -> None:
    server = resident()
    world = make_world("nftables", subnet="10.95.0.0/28")
    rt = world.rt("c0", netns("C0"), 8081)
    world.add(rt)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "relnet.conflist").write_bytes(world.conf.raw)
    env = {"PATH": PLUGIN_PATH, STATE_ENV: os.environ[STATE_ENV],
           SOCKET_ENV: str(server.socket)}
    cli = [str(world.plugin_dir / "cni-bridge"), "status", "--conf-dir", str(conf_dir),
           "--cache-dir", str(tmp_path / "cli-cache"), "--plugin-dir", str(world.plugin_dir)]

    doc = json.loads(world.host.run(*cli, "--json", env=env).stdout)
    assert doc["server"]["pid"] == server.pid and doc["server"]["served_total"] >= 2
    assert doc["server"]["networks"]["relnet"]  # the records, from the server's memory
    (net,) = doc["networks"]
    (att,) = net["attachments"]
    assert (att["container_id"], att["rules"]) == ("c0", "present")
    text = world.host.run(*cli, env=env).stdout
    assert f"resident server  pid {server.pid} on {server.socket}" in text
    assert "skeleton whole" in text

    world.host.run("nft", "flush", "ruleset")
    wait_for(lambda: (server.status() or {}).get("last_restore") is not None,
             "the server to restore the flushed rules", 15)
    text = world.host.run(*cli, env=env).stdout
    assert "last restore" in text and "2 record(s) after change: nftables" in text

    alone = json.loads(world.host.run(*cli, "--json", "--no-server", env=env).stdout)
    assert alone["server"] is None
    assert alone["networks"][0]["attachments"][0]["rules"] == "present"  # checked here
    other = json.loads(world.host.run(*cli, "--json", env={**env, STATE_ENV: str(tmp_path)})
                       .stdout)
    assert other["server"] is None  # that server watches another record directory
    world.delete(rt)
