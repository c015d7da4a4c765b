"""On the nftables backend a plugin call starts no process: the frozen bridge + portmap ADD,
CHECK and DEL talk to the kernel in-process (libnftables, route lookup and conntrack over
netlink, sysctls under /proc/sys). On the iptables backend they start only the batched
iptables-save/iptables-restore processes, counted here.

The plugins run with a PATH whose first directory holds recording stand-ins for ``nft``, ``ip``,
``conntrack``, ``sysctl`` and the iptables tools (the firewall runner keeps the caller's PATH
first, so any tool the plugins started would be one of these): none may be started, while the
kernel state is what each verb must leave, and traffic flows through the published ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conflist_runner import Runtime, RuntimeConf, parse_conflist
from tests.integration.test_portmap_world import (
    BRIDGE,
    FIREWALL_TOOLS,
    H_UPLINK_V4,
    O_ETH0_V4,
    World,
    build_world,
    conntrack_udp,
    mentions,
    network_doc,
    recording_path,
    udp_from_port,
)
from tests.netns import Netns, echo_server, probe

MAPPINGS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]
CID = "quiet1"
CASES = {"default": {}, "spoof-and-isolation": {"ipspoofchk": True, "isolateNetworks": True}}


@pytest.fixture(scope="module")
def world(plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world("default", plugin_dir, tmp_path_factory.mktemp("no-tools")) as w:
        yield w


def quiet_runtime(w: World, bridge_fields: dict[str, Any], tmp: Path,
                  backend: str = "default") -> tuple[Runtime, Any, Path]:
    path, log = recording_path(tmp / "bin", (*FIREWALL_TOOLS, "sysctl"))
    doc = network_doc(backend, w.tmp, name=f"quiet{backend}")
    doc["plugins"][0].update(bridge_fields)
    runtime = Runtime([str(w.plugin_dir)], str(tmp / "cache"), w.host, extra_env={"PATH": path})
    return runtime, parse_conflist(doc), log


def nft(ns: Netns, *what: str) -> str:
    return ns.run("nft", "list", *what, check=False).stdout


def stale_udp_flow(host: Netns) -> None:
    """A conntrack entry for host port 8053 that ADD must flush (as a client that kept
    sending to a previous owner of the port would have)."""
    host.run("conntrack", "-I", "-p", "udp", "-s", O_ETH0_V4, "-d", H_UPLINK_V4, "--sport",
             "40053", "--dport", "8053", "-t", "120")


@pytest.mark.parametrize("case", sorted(CASES))
def test_add_check_del_start_no_process(world: World, case: str, tmp_path: Path) -> None:
    w, fields = world, CASES[case]
    runtime, conflist, log = quiet_runtime(w, fields, tmp_path)
    ns = w.netns("quiet")
    rt = RuntimeConf(CID, ns.path, "eth0", "", {"portMappings": MAPPINGS})
    stale_udp_flow(w.host)
    assert H_UPLINK_V4 in conntrack_udp(w.host, 8053)

    result = runtime.add(conflist, rt)
    ip = next(a["address"].split("/")[0] for a in result["ips"] if ":" not in a["address"])
    ours = nft(w.host, "table", "inet", "cni_bridge")
    assert mentions(ours, ip) and "8080" in ours and "8053" in ours
    assert w.host.sysctl(f"net.ipv4.conf.{BRIDGE}.route_localnet") == "1"
    assert H_UPLINK_V4 not in conntrack_udp(w.host, 8053)  # the stale flow was flushed
    spoof = f"cni-br-iface-{CID}-eth0"
    if fields:
        assert f"chain {spoof}" in nft(w.host, "table", "bridge", "nat")
        isolated = nft(w.host, "set", "inet", "cni_bridge", "isolated_bridges")
        assert f'"{BRIDGE}"' in isolated
    with echo_server(ns, "tcp", 80) as server:
        assert probe(w.outside, "tcp", H_UPLINK_V4, 8080).ok
    assert server.peer == O_ETH0_V4
    with echo_server(ns, "udp", 53):
        assert udp_from_port(w.outside, H_UPLINK_V4, 8053, 40054, 5)

    runtime.check(conflist, rt)
    runtime.delete(conflist, rt)
    w.forget(ns)
    everything = nft(w.host, "ruleset")
    assert not mentions(everything, ip)
    assert spoof not in everything
    assert not log.exists(), f"tools were started:\n{log.read_text()}"


def started(log: Path) -> list[str]:
    lines = [ln.strip() for ln in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_iptables_calls_are_batched(world: World, tmp_path: Path) -> None:
    """Per family and plugin: one read and one restore for ADD (the IPv4 portmap read covers
    the raw table for the localhost drop), one read for CHECK, one exact restore for DEL."""
    w = world
    runtime, conflist, log = quiet_runtime(w, {}, tmp_path, backend="iptables")
    warm = w.netns("warm")  # the first ADD on a node also creates the shared chains
    warm_map = [{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]
    warm_rt = RuntimeConf("warm1", warm.path, "eth0", "", {"portMappings": warm_map})
    runtime.add(conflist, warm_rt)
    ns = w.netns("counted")
    rt = RuntimeConf("counted1", ns.path, "eth0", "", {"portMappings": MAPPINGS})
    started(log)
    save4, save6, restore4, restore6 = ("iptables-save -t nat", "ip6tables-save -t nat",
                                        "iptables-restore --noflush -w 5",
                                        "ip6tables-restore --noflush -w 5")
    runtime.add(conflist, rt)
    assert started(log) == [save4, restore4, save6, restore6,  # bridge
                            "iptables-save", restore4, save6, restore6]  # portmap
    runtime.check(conflist, rt)
    assert started(log) == [save4, save6, "iptables-save", save6]
    runtime.delete(conflist, rt)
    assert started(log) == [restore4, restore6, restore4, restore6]  # portmap, then bridge
    runtime.delete(conflist, warm_rt)
    for gone in (ns, warm):
        w.forget(gone)
