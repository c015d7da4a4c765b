"""iptables backend against a real kernel, and against the reference plugins in /usr/lib/cni.

The differential tests run the reference ``bridge`` (ipMasq, host-local) and ``portmap`` (Debian
1.1.1, iptables only) in one host namespace and our backend, fed the same inputs, in another,
then compare ``iptables-save -t nat``; the interop tests remove with one implementation what the
other added.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.firewall import names as n
from cni_bridge.firewall.detect import make_backend
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.backend import IptablesBackend
from cni_bridge.firewall.iptables.portmap import config_mappings
from cni_bridge.firewall.model import MasqEntry, PortmapOptions, PortMapping
from cni_bridge.firewall.nft.backend import NftablesBackend
from tests.integration.conftest import RunPlugin
from tests.integration.test_firewall_common import (
    NsRunner,
    cni_chains,
    mapping,
    masq,
    nat_save,
    owner,
)
from tests.netns import Netns
from tests.unit.test_firewall_golden import load_case

REFERENCE_DIR = Path("/usr/lib/cni")
OPTS = PortmapOptions()
SHARED = {n.HOSTPORT_DNAT_CHAIN, n.HOSTPORT_MASQ_CHAIN, n.HOSTPORT_SETMARK_CHAIN}
needs_reference = pytest.mark.skipif(not (REFERENCE_DIR / "portmap").exists(),
                                     reason="reference plugins not installed in /usr/lib/cni")


@pytest.fixture
def ipt(host_ns: Netns) -> IptablesBackend:
    return IptablesBackend(NsRunner(host_ns))


def per_container(ns: Netns, version: int = 4) -> dict[str, list[str]]:
    return {c: r for c, r in cni_chains(nat_save(ns, version)).items() if c not in SHARED
            and not (c in ("PREROUTING", "OUTPUT") and all(n.HOSTPORT_DNAT_CHAIN in x for x in r))
            and not (c == "POSTROUTING" and all(n.HOSTPORT_MASQ_CHAIN in x for x in r))}


def test_round_trip_both_families(host_ns: Netns, ipt: IptablesBackend) -> None:
    a = owner("abc123")
    entries = masq(a, "10.88.0.2/16", "fd00::2/64")
    pms = [mapping(a, "tcp", 8080, "10.88.0.2/16", 80), mapping(a, "tcp", 8080, "fd00::2/64", 80)]
    ipt.add_masquerade(entries)
    ipt.add_portmappings(pms, OPTS)
    once = (nat_save(host_ns, 4), nat_save(host_ns, 6))
    ipt.add_masquerade(entries)
    ipt.add_portmappings(pms, OPTS)
    assert (nat_save(host_ns, 4), nat_save(host_ns, 6)) == once  # add twice = add once
    assert ipt.check_masquerade(entries) == [] and ipt.check_portmappings(pms, OPTS) == []

    ipt.remove_masquerade(a, [e.address for e in entries])
    ipt.remove_portmappings(a, pms)
    assert per_container(host_ns, 4) == {} and per_container(host_ns, 6) == {}
    assert len(ipt.check_masquerade(entries)) == 2
    ipt.remove_masquerade(a, None)  # already gone
    ipt.remove_portmappings(a, None)


def test_removal_cleans_our_nft_state_of_an_earlier_backend(host_ns: Netns) -> None:
    ipt = make_backend("iptables", NsRunner(host_ns))  # its removals sweep nft leftovers
    a = owner("downgraded")
    entries = masq(a, "10.88.0.2/16")
    pms = [mapping(a, "udp", 8053, "10.88.0.2/16", 53)]
    nft = NftablesBackend(NsRunner(host_ns))
    nft.add_masquerade(entries)
    nft.add_portmappings(pms, OPTS)
    ipt.remove_masquerade(a, [e.address for e in entries])
    ipt.remove_portmappings(a, None)
    assert len(nft.check_masquerade(entries)) == 2
    assert len(nft.check_portmappings(pms, OPTS)) == 4  # owner, DNAT, hairpin, localhost
    assert "upgraded" not in host_ns.run("nft", "list", "ruleset").stdout


def test_two_owners_then_remove_one(host_ns: Netns, ipt: IptablesBackend) -> None:
    a, b = owner("aaa"), owner("bbb")
    ipt.add_masquerade(masq(a, "10.88.0.2/16") + masq(b, "10.88.0.3/16"))
    ipt.add_portmappings([mapping(a, "tcp", 8001, "10.88.0.2/16", 80)], OPTS)
    ipt.add_portmappings([mapping(b, "tcp", 8002, "10.88.0.3/16", 80)], OPTS)
    ipt.remove_masquerade(a, None)
    ipt.remove_portmappings(a, None)
    assert ipt.check_masquerade(masq(b, "10.88.0.3/16")) == []
    assert ipt.check_portmappings([mapping(b, "tcp", 8002, "10.88.0.3/16", 80)], OPTS) == []
    assert not any(n.masq_chain_name("mynet", "aaa") in c or n.dnat_chain_name("mynet", "aaa") in c
                   for c in nat_save(host_ns))


def test_second_attachment_keeps_the_shared_chain(host_ns: Netns, ipt: IptablesBackend) -> None:
    """The chain ignores ifname (reference): removing eth1's address keeps eth0's masquerade."""
    eth0, eth1 = owner("multi"), owner("multi", ifname="eth1")
    ipt.add_masquerade(masq(eth0, "10.88.0.2/16") + masq(eth1, "10.88.0.3/16"))
    ipt.remove_masquerade(eth1, [masq(eth1, "10.88.0.3/16")[0].address])
    assert ipt.check_masquerade(masq(eth0, "10.88.0.2/16")) == []


def test_conflicting_host_port_is_refused(ipt: IptablesBackend) -> None:
    ipt.add_portmappings([mapping(owner("first"), "tcp", 8080, "10.88.0.2/16", 80)], OPTS)
    with pytest.raises(HostPortConflictError, match=r"\*:8080/tcp .* container first \(mynet\)"):
        ipt.add_portmappings([mapping(owner("second"), "tcp", 8080, "10.88.0.3/16", 80)], OPTS)


def test_gc(host_ns: Netns, ipt: IptablesBackend) -> None:
    keep, drop, other = owner("keep"), owner("drop"), owner("other", network="net2")
    ipt.add_masquerade(masq(keep, "10.88.0.2/16") + masq(drop, "10.88.0.3/16")
                       + masq(other, "10.99.0.2/16"))
    ipt.add_portmappings([mapping(drop, "tcp", 8080, "10.88.0.3/16", 80)], OPTS)
    removed = ipt.gc_masquerade("mynet", [keep]) + ipt.gc_portmappings("mynet", [keep])
    assert [r.split(" of ")[1] for r in removed] == ["container drop"] * 2
    assert ipt.check_masquerade(masq(keep, "10.88.0.2/16") + masq(other, "10.99.0.2/16")) == []
    assert ipt.gc_masquerade("mynet", [keep]) == []


# --- against the reference plugins -------------------------------------------------------------

DIFF_CASES = ["reference-basic", "dual-stack-conditions", "many-ports", "no-snat", "long-names"]


def _bridge_conf(case_masq: list[MasqEntry], pms: list[PortMapping], data_dir: Path,
                 ip_masq: bool) -> dict[str, Any]:
    first = (case_masq or pms)[0].owner
    subnets = {str(e.address.network) for e in case_masq} | {
        str(p.container_ip.network) for p in pms}
    return {"cniVersion": "1.0.0", "name": first.network, "type": "bridge", "bridge": "cni0",
            "isGateway": True, "ipMasq": ip_masq,
            "ipam": {"type": "host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": s}] for s in sorted(subnets)]}}


def _portmap_conf(pms: list[PortMapping], options: PortmapOptions, network: str,
                  prev: Any) -> dict[str, Any]:
    maps = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
             **({"hostIP": str(p.host_ip)} if p.host_ip else {})} for p in config_mappings(pms)]
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": network, "type": "portmap",
                            "capabilities": {"portMappings": True}, "snat": options.snat,
                            "markMasqBit": options.mark_masq_bit,
                            "runtimeConfig": {"portMappings": maps}, "prevResult": prev}
    if options.external_set_mark_chain:
        conf.pop("markMasqBit")
        conf["externalSetMarkChain"] = options.external_set_mark_chain
    if options.conditions_v4:
        conf["conditionsV4"] = list(options.conditions_v4)
    return conf


Reference = Callable[..., Any]


@pytest.fixture
def reference(run_plugin: RunPlugin, tmp_path: Path) -> Reference:
    """Run a reference plugin in `ns` for container `cid`; returns the parsed result."""

    def call(ns: Netns, plugin: str, command: str, conf: dict[str, Any], cid: str,
             container: Netns, ifname: str) -> Any:
        run = run_plugin(ns, str(REFERENCE_DIR / plugin), command, conf, container_id=cid,
                         netns=container, ifname=ifname, cni_path=str(REFERENCE_DIR))
        assert run.rc == 0, f"reference {plugin} {command}: {run.stdout} {run.stderr}"
        return run.json

    return call


def _external_chain(ns: Netns, options: PortmapOptions) -> None:
    if options.external_set_mark_chain:
        for tool in ("iptables", "ip6tables"):
            ns.run(tool, "-t", "nat", "-N", options.external_set_mark_chain)


@needs_reference
@pytest.mark.parametrize("case", DIFF_CASES)
def test_same_rules_as_the_reference(case: str, netns: Callable[[str], Netns],
                                     reference: Reference, tmp_path: Path) -> None:
    case_masq, pms, options = load_case(case)
    o = (case_masq or pms)[0].owner
    ref_h, ref_c, our_h = netns("H"), netns("C"), netns("H")
    for ns in (ref_h, our_h):
        _external_chain(ns, options)
    prev = reference(ref_h, "bridge", "ADD", _bridge_conf(case_masq, pms, tmp_path,
                                                          bool(case_masq)),
                     o.container_id, ref_c, o.ifname)
    got = {ip["address"] for ip in prev["ips"]}
    assert got == {str(e.container_ip) for e in pms} | {str(e.address) for e in case_masq}
    if pms:
        reference(ref_h, "portmap", "ADD", _portmap_conf(pms, options, o.network, prev),
                  o.container_id, ref_c, o.ifname)

    ours = IptablesBackend(NsRunner(our_h))
    ours.add_masquerade(case_masq)
    ours.add_portmappings(pms, options)
    for version in (4, 6):
        assert cni_chains(nat_save(our_h, version)) == cni_chains(nat_save(ref_h, version))

    # Our DEL removes what the reference added; the reference's DEL still succeeds afterwards.
    mine = IptablesBackend(NsRunner(ref_h))
    mine.remove_portmappings(o, pms)
    mine.remove_masquerade(o, [e.address for e in case_masq])
    assert per_container(ref_h, 4) == {} and per_container(ref_h, 6) == {}


@needs_reference
def test_reference_del_removes_what_we_added(netns: Callable[[str], Netns],
                                             reference: Reference, tmp_path: Path) -> None:
    case_masq, pms, options = load_case("dual-stack-conditions")
    options = PortmapOptions(conditions_v4=options.conditions_v4)  # with SETMARK/MASQ chains
    o = case_masq[0].owner
    host, container = netns("H"), netns("C")
    bridge = _bridge_conf(case_masq, pms, tmp_path, ip_masq=False)
    prev = reference(host, "bridge", "ADD", bridge, o.container_id, container, o.ifname)
    ours = IptablesBackend(NsRunner(host))
    ours.add_masquerade(case_masq)
    ours.add_portmappings(pms, options)
    assert per_container(host, 4) and per_container(host, 6)

    reference(host, "portmap", "DEL", _portmap_conf(pms, options, o.network, prev),
              o.container_id, container, o.ifname)
    reference(host, "bridge", "DEL", {**bridge, "ipMasq": True}, o.container_id, container,
              o.ifname)
    assert per_container(host, 4) == {} and per_container(host, 6) == {}
    assert json.dumps(ours.check_masquerade(case_masq)).count("missing") == 2


def test_concurrent_first_adds_keep_each_others_jumps(host_ns: Netns,
                                                      ipt: IptablesBackend) -> None:
    """Two first ADDs on a node read the same empty table. The one that writes second must not
    flush the shared chain the first just appended to (a `:CNI-HOSTPORT-DNAT` line in a
    --noflush restore would): both containers' jumps survive."""
    a, b = owner("first"), owner("second")
    a_map, b_map = [mapping(a, "tcp", 8080, "10.88.0.2/16", 80)], [
        mapping(b, "tcp", 8081, "10.88.0.3/16", 80)]
    stale = ipt.state(4)  # what B read before A wrote
    ipt.add_portmappings(a_map, OPTS)
    late = ipt_portmap.plan_add_portmappings(stale, b, b_map, 4, OPTS)
    for chain in late.shared:
        host_ns.run("iptables", "-w", "5", "-t", "nat", "-N", chain, check=False)
    host_ns.run("iptables-restore", "--noflush", "-w", "5", input=late.render())
    jumps = nat_save(host_ns)[n.HOSTPORT_DNAT_CHAIN]
    assert [j for j in jumps if "first" in j] and [j for j in jumps if "second" in j], jumps
    assert ipt.check_portmappings(a_map, OPTS) == []
    assert ipt.check_portmappings(b_map, OPTS) == []
