"""portmap next to the reference plugins (Debian 1.1.1 in /usr/lib/cni: iptables only, cniVersion
up to 1.0.0) and next to a kube-proxy-like rule, with ``backend: iptables``.

- the reference bridge + host-local chained with our portmap, and our bridge + host-local with the
  reference portmap: traffic from outside reaches the container in both;
- the state is shared: our DEL removes what the reference portmap added, and the reference DEL
  removes what ours added (same chains, same rule text);
- a rule already jumping from PREROUTING (kube-proxy's KUBE-SERVICES) keeps precedence: ours are
  appended (CVE-2019-9946);
- a DEL after the node switched backend (iptables <-> nftables) still removes everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.firewall import names
from tests.conflist_runner import Runtime, parse_conflist
from tests.integration.test_portmap_world import (
    H_UPLINK_V4,
    O2_V4,
    O_ETH0_V4,
    REFERENCE_DIR,
    Container,
    World,
    build_world,
    mentions,
    mixed_plugin_dir,
    nat_rules,
    network_doc,
)
from tests.netns import echo_server, probe

pytestmark = pytest.mark.skipif(not (REFERENCE_DIR / "portmap").exists(),
                                reason="reference plugins not installed in /usr/lib/cni")


@pytest.fixture(scope="module")
def world(plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world("iptables", plugin_dir, tmp_path_factory.mktemp("pm-interop")) as w:
        yield w


def reference_network(w: World, name: str, bridge: str, subnet: str) -> dict[str, Any]:
    """A v4 network at cniVersion 1.0.0 that every implementation can run."""
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isDefaultGateway": True, "ipMasq": True,
         "hairpinMode": True, "ipMasqBackend": "iptables",
         "ipam": {"type": "host-local", "dataDir": str(w.tmp / "ipam"),
                  "ranges": [[{"subnet": subnet}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "backend": "iptables"},
    ]}


def runtime_with(w: World, reference: list[str], label: str) -> Runtime:
    directory = mixed_plugin_dir(w.tmp / f"plugins-{label}", w.plugin_dir, reference)
    return Runtime([str(directory)], str(w.tmp / "cache"), w.host)


def outside_reaches(w: World, c: Container, host_port: int) -> None:
    with echo_server(c.ns, "tcp", 80) as server:
        result = probe(w.outside, "tcp", H_UPLINK_V4, host_port)
        assert result.ok, result.output
    assert server.peer == O_ETH0_V4


def owner_rules(w: World, c: Container) -> list[str]:
    """Rules of the container's DN chain and every rule naming its address or chain."""
    dn = names.dnat_chain_name(c.conflist.name, c.cid)
    return [r for r in nat_rules(w.host) if dn in r or mentions(r, c.ip(4))]


def test_reference_bridge_with_our_portmap(world: World) -> None:
    doc = reference_network(world, "pmref-a", "pmrefa0", "10.67.0.0/24")
    ours_for_portmap = runtime_with(world, ["bridge", "host-local"], "refbridge")
    all_reference = runtime_with(world, ["bridge", "host-local", "portmap"], "reference")
    c = world.add("pmrefa", [{"hostPort": 8100, "containerPort": 80, "protocol": "tcp"}],
                  conflist=parse_conflist(doc), runtime=ours_for_portmap)
    try:
        outside_reaches(world, c, 8100)
        ours_for_portmap.check(c.conflist, c.rt)
        assert owner_rules(world, c)
    finally:
        # The reference portmap's DEL removes our rules: same chain names, same rule text.
        c.runtime = all_reference
        world.delete(c)
    assert owner_rules(world, c) == []


def test_reference_portmap_added_our_portmap_deletes(world: World) -> None:
    doc = reference_network(world, "pmref-b", "pmrefb0", "10.68.0.0/24")
    conflist = parse_conflist(doc)
    reference_portmap = runtime_with(world, ["portmap"], "refportmap")
    ours = Runtime([str(world.plugin_dir)], str(world.tmp / "cache"), world.host)
    mappings = [{"hostPort": 8200, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 8201, "containerPort": 53, "protocol": "udp"}]
    c = world.add("pmrefb", mappings, conflist=conflist, runtime=reference_portmap)
    try:
        outside_reaches(world, c, 8200)
        assert owner_rules(world, c)
        ours.check(conflist, c.rt)  # our CHECK accepts the reference's rules as they are
    finally:
        c.runtime = ours
        world.delete(c)
    assert owner_rules(world, c) == []
    jumps = [r for r in nat_rules(world.host) if r.endswith(f"-j {names.HOSTPORT_DNAT_CHAIN}")]
    assert len(jumps) == 2  # one from PREROUTING, one from OUTPUT: nobody duplicated them


def test_kube_proxy_rule_in_prerouting_keeps_precedence(world: World) -> None:
    """KUBE-SERVICES DNATs 9090 elsewhere; our later mapping of 9090 must not capture it."""
    w = world
    h = w.host
    h.run("iptables", "-t", "nat", "-N", "KUBE-SERVICES")
    h.run("iptables", "-t", "nat", "-A", "KUBE-SERVICES", "-p", "tcp", "--dport", "9090",
          "-j", "DNAT", "--to-destination", f"{O2_V4}:9999")
    h.run("iptables", "-t", "nat", "-I", "PREROUTING", "1", "-j", "KUBE-SERVICES")
    c = None
    try:
        c = w.add("pmkube", [{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}])
        prerouting = [r for r in nat_rules(h) if r.startswith("-A PREROUTING ")]
        kube = prerouting.index("-A PREROUTING -j KUBE-SERVICES")
        ours = next(i for i, r in enumerate(prerouting) if names.HOSTPORT_DNAT_CHAIN in r)
        assert kube < ours, prerouting
        with echo_server(c.ns, "tcp", 80) as container, \
                echo_server(w.outside2, "tcp", 9999) as service:
            result = probe(w.outside, "tcp", H_UPLINK_V4, 9090)
            assert result.ok, result.output
            container.proc.kill()
        assert service.peer == O_ETH0_V4 and container.wait(timeout=1) is None
    finally:
        if c is not None:
            w.delete(c)
        h.run("iptables", "-t", "nat", "-D", "PREROUTING", "-j", "KUBE-SERVICES", check=False)
        h.run("iptables", "-t", "nat", "-F", "KUBE-SERVICES", check=False)
        h.run("iptables", "-t", "nat", "-X", "KUBE-SERVICES", check=False)
    assert not any("KUBE" in r for r in nat_rules(h))


@pytest.mark.parametrize(("added_with", "deleted_with"), [("iptables", "default"),
                                                         ("default", "iptables")])
def test_del_after_a_backend_switch_leaves_nothing(world: World, added_with: str,
                                                   deleted_with: str) -> None:
    """The node changed backend between ADD and DEL: the DEL still finds everything."""
    name = "pmswitch"
    before = parse_conflist(network_doc(added_with, world.tmp, name=name))
    after = parse_conflist(network_doc(deleted_with, world.tmp, name=name))
    c = world.add(f"pmsw-{added_with}", [{"hostPort": 8300, "containerPort": 80,
                                          "protocol": "tcp"}], conflist=before)
    try:
        outside_reaches(world, c, 8300)
    finally:
        c.conflist = after
        world.delete(c)
    text = world.firewall_text()
    assert not any(mentions(text, a) for a in c.addresses()), text
