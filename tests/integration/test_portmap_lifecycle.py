"""portmap's verbs over a container's life, for the default backend and ``backend: iptables``:
host-port conflicts, UDP re-mapping, clean-up, pass-through, bad mappings, CHECK, GC, STATUS.

Each test makes and removes its own containers in a world shared by the module (see
test_portmap_world), whose C0 publishes 8080/tcp and 8053/udp for the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conflist_runner import PluginError
from tests.integration.conftest import RunPlugin
from tests.integration.test_portmap_world import (
    BACKENDS,
    FIREWALL_TOOLS,
    H_UPLINK_V4,
    O_ETH0_V4,
    Container,
    World,
    build_world,
    conntrack_udp,
    mentions,
    nat_rules,
    normalised,
    recording_path,
    udp_from_port,
)
from tests.netns import echo_server, probe

C0_MAPPINGS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
               {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]


@dataclass
class Ctx:
    world: World
    c0: Container


@pytest.fixture(scope="module", params=BACKENDS)
def ctx(request: pytest.FixtureRequest, plugin_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp(f"pm-life-{request.param}")
    with build_world(request.param, plugin_dir, tmp) as world:
        yield Ctx(world, world.add("lc0", C0_MAPPINGS))


def assert_no_trace(w: World, *containers: Container) -> None:
    """No rule or element of either backend mentions the containers' addresses."""
    text = w.firewall_text()
    for c in containers:
        for address in c.addresses():
            assert not mentions(text, address), f"{address} of {c.cid} is still there:\n{text}"


def c0_still_answers(ctx: Ctx) -> None:
    with echo_server(ctx.c0.ns, "tcp", 80) as server:
        result = probe(ctx.world.outside, "tcp", H_UPLINK_V4, 8080)
        assert result.ok, result.output
    assert server.peer == O_ETH0_V4


def test_host_port_conflict_names_the_holder(ctx: Ctx) -> None:
    w = ctx.world
    before = w.firewall_snapshot()
    with pytest.raises(PluginError) as failure:
        w.add("lc-thief", [{"hostPort": 8080, "containerPort": 8080, "protocol": "tcp"}])
    err = failure.value
    assert err.plugin == "portmap" and err.code == 110
    assert "8080" in err.msg and ctx.c0.cid in err.msg
    w.forget(w.made[-1])  # the runtime already DELeted the failed attachment
    # The cleanup DEL of the failed container removed nothing of C0's.
    assert w.firewall_snapshot() == before
    c0_still_answers(ctx)


def test_udp_remap_reaches_the_new_container_promptly(ctx: Ctx) -> None:
    """A client that keeps its source port keeps its conntrack entry: ADD must flush it."""
    w, mapping = ctx.world, [{"hostPort": 9053, "containerPort": 53, "protocol": "udp"}]
    old = w.add("lc-udp-old", mapping)
    with echo_server(old.ns, "udp", 53, reply="old") as server:
        assert udp_from_port(w.outside, H_UPLINK_V4, 9053, 40053, timeout=3)
    assert server.peer == O_ETH0_V4
    w.delete(old)
    # The client goes on sending into the void: the stale entry still points at the old IP.
    assert not udp_from_port(w.outside, H_UPLINK_V4, 9053, 40053, timeout=0.3)
    assert old.ip(4) in conntrack_udp(w.host, 9053)
    new = w.add("lc-udp-new", mapping)
    try:
        assert old.ip(4) not in conntrack_udp(w.host, 9053)
        with echo_server(new.ns, "udp", 53, reply="new") as server:
            assert udp_from_port(w.outside, H_UPLINK_V4, 9053, 40053, timeout=2)
        assert server.peer == O_ETH0_V4
    finally:
        w.delete(new)


def test_del_of_every_container_leaves_no_trace(ctx: Ctx) -> None:
    w = ctx.world
    many = [{"hostPort": p, "containerPort": 80, "protocol": "tcp"} for p in range(9100, 9120)]
    a = w.add("lc-a", [*many, {"hostPort": 9200, "containerPort": 53, "protocol": "udp"},
                       {"hostPort": 9201, "containerPort": 80, "protocol": "tcp",
                        "hostIP": "127.0.0.1"}])
    text = w.firewall_text()
    assert mentions(text, a.ip(4)) and mentions(text, a.ip(6))
    w.delete(a)
    assert_no_trace(w, a)
    # DEL is idempotent: again, with and without prevResult (the cache entry is gone now).
    a.runtime.delete(a.conflist, a.rt)
    c0_still_answers(ctx)


def test_without_mappings_output_is_prev_result_and_no_tool_runs(
        ctx: Ctx, run_plugin: RunPlugin, tmp_path: Path) -> None:
    """No mappings (absent or empty): ADD prints prevResult, and no firewall tool runs at all."""
    w = ctx.world
    if w.backend != "default":
        pytest.skip("no backend is involved: one run is enough")
    path, log = recording_path(tmp_path / "bin", FIREWALL_TOOLS)
    before = w.firewall_snapshot()
    base = {**w.conflist.plugins[1], "name": w.conflist.name,
            "cniVersion": w.conflist.cni_version, "prevResult": ctx.c0.result}
    runtime_configs: list[dict[str, Any] | None] = [None, {"portMappings": []}]
    for runtime_config in runtime_configs:
        config = dict(base)
        if runtime_config is not None:
            config["runtimeConfig"] = runtime_config
        for command in ("ADD", "CHECK", "DEL"):
            run = run_plugin(w.host, "portmap", command, config, container_id="lc-plain",
                             netns=ctx.c0.ns, env={"PATH": path})
            assert run.rc == 0, run.stdout + run.stderr
            if command == "ADD":
                assert normalised(run.json) == normalised(ctx.c0.result)
    assert not log.exists(), log.read_text()
    assert w.firewall_snapshot() == before


BAD_MAPPINGS: list[tuple[dict[str, Any], str]] = [
    ({"hostPort": 0, "containerPort": 80, "protocol": "tcp"}, "host port"),
    ({"hostPort": 65536, "containerPort": 80, "protocol": "tcp"}, "host port"),
    ({"hostPort": 8000, "containerPort": 70000, "protocol": "tcp"}, "container port"),
    ({"hostPort": 8000, "containerPort": 80, "protocol": "icmp"}, "protocol"),
    ({"hostPort": 8000, "containerPort": 80, "protocol": "tcp", "hostIP": "300.1.1.1"}, "hostIP"),
    ({"hostPort": 8000, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"}, "::1"),
]


def test_bad_mappings_are_refused_before_anything_is_installed(
        ctx: Ctx, run_plugin: RunPlugin, tmp_path: Path) -> None:
    w, c0 = ctx.world, ctx.c0
    if w.backend != "default":
        pytest.skip("refused while parsing, before any backend is chosen: one run is enough")
    path, log = recording_path(tmp_path / "bin", FIREWALL_TOOLS)
    before = w.firewall_snapshot()
    good = {"hostPort": 8500, "containerPort": 80, "protocol": "tcp"}
    for bad, word in BAD_MAPPINGS:
        config = {**w.conflist.plugins[1], "name": w.conflist.name,
                  "cniVersion": w.conflist.cni_version, "prevResult": c0.result,
                  "runtimeConfig": {"portMappings": [good, bad]}}
        run = run_plugin(w.host, "portmap", "ADD", config, container_id="lc-bad",
                         netns=c0.ns, env={"PATH": path})
        assert run.rc == 1 and run.json["code"] == 7, run.stdout
        assert word in run.json["msg"] + run.json.get("details", ""), run.json
    assert not log.exists(), log.read_text()
    assert w.firewall_snapshot() == before


def test_check_is_precise_and_gc_removes_what_is_no_longer_valid(ctx: Ctx) -> None:
    w = ctx.world
    c = w.add("lc-check", [{"hostPort": 9400, "containerPort": 80, "protocol": "tcp"},
                           {"hostPort": 9401, "containerPort": 80, "protocol": "tcp"}])
    try:
        w.runtime.check(w.conflist, c.rt)
        if w.backend == "iptables":
            rule = next(r for r in nat_rules(w.host) if r.startswith("-A CNI-DN-")
                        and "--dport 9401" in r and "-j DNAT" in r)
            w.host.run("iptables", "-t", "nat", "-D", *rule.split()[1:])
        else:
            w.host.run("nft", "delete", "element", "inet", "cni_bridge", "hostport_any4",
                       "{ tcp . 9401 }")
        w.host.write_sysctl("net/ipv4/conf/pmbr0/route_localnet", "0")
        with pytest.raises(PluginError) as failure:
            w.runtime.check(w.conflist, c.rt)
        text = failure.value.msg + failure.value.details
        assert failure.value.plugin == "portmap" and c.cid in text, text
        assert "9401" in text and "9400" not in text, text
        assert "route_localnet" in text, text
        w.host.write_sysctl("net/ipv4/conf/pmbr0/route_localnet", "1")
        # The runtime loses its cache entry: only the plugins' GC can find the leftovers.
        (w.tmp / "cache" / "results" / f"{w.conflist.name}-{c.cid}-eth0").unlink()
        w.alive.remove(c)
        assert mentions(w.firewall_text(), c.ip(4))
        w.runtime.gc(w.conflist, [(a.cid, a.rt.ifname) for a in w.alive])
        assert_no_trace(w, c)
        w.runtime.check(w.conflist, ctx.c0.rt)  # the valid attachments were left alone
        c0_still_answers(ctx)
    finally:
        w.host.write_sysctl("net/ipv4/conf/pmbr0/route_localnet", "1")
        if c in w.alive:
            w.delete(c)
        w.forget(c.ns)


def test_status_reports_a_usable_backend(ctx: Ctx, run_plugin: RunPlugin) -> None:
    w = ctx.world
    w.runtime.status(w.conflist)
    config = {**w.conflist.plugins[1], "name": w.conflist.name, "cniVersion": "1.1.0"}
    run = run_plugin(w.host, "portmap", "STATUS", config, container_id=None, ifname=None)
    assert run.rc == 0 and run.stdout == ""


def test_backend_options_of_the_other_backend_are_refused(ctx: Ctx,
                                                         run_plugin: RunPlugin) -> None:
    w = ctx.world
    wrong = ({"externalSetMarkChain": "KUBE-MARK-MASQ", "backend": "nftables"}
             if w.backend == "default" else {"conditionsV4": ["ip", "daddr", "!=", "10.0.0.1"]})
    config = {**w.conflist.plugins[1], **wrong, "name": w.conflist.name,
              "cniVersion": w.conflist.cni_version, "prevResult": ctx.c0.result,
              "runtimeConfig": {"portMappings": C0_MAPPINGS}}
    before = w.firewall_snapshot()
    run = run_plugin(w.host, "portmap", "ADD", config, container_id="lc-wrong", netns=ctx.c0.ns)
    assert run.rc == 1 and run.json["code"] == 7
    other = "iptables" if w.backend == "default" else "nftables"
    assert "backend was requested but configuration contains" in run.json["msg"]
    assert f"{other}-specific options" in run.json["msg"]
    assert w.firewall_snapshot() == before
