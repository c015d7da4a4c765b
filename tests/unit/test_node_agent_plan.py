"""node-agent's pure parts: Node objects, overlaps, the derived cluster CIDR, the conflist plan,
route planning and the diff against the main table (no root, no network)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cni_bridge.net.model import RouteInfo
from cni_bridge.node_agent.conflist import plan_conflist
from cni_bridge.node_agent.nodes import (
    NodeFormatError,
    NodeInfo,
    covering_network,
    derive_cluster_cidrs,
    find_conflicts,
    parse_node,
)
from cni_bridge.node_agent.route_plan import (
    ROUTE_PROTOCOL,
    LocalNetwork,
    NodeRoute,
    diff_routes,
    plan_routes,
)

net = ipaddress.ip_network
ip = ipaddress.ip_address


def node_obj(name: str, cidrs: list[str] | None = None, ips: list[str] | None = None,
             single: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cidrs is not None:
        spec["podCIDRs"] = cidrs
    if single is not None:
        spec["podCIDR"] = single
    addresses = [{"type": "InternalIP", "address": a} for a in ips or []]
    addresses.append({"type": "Hostname", "address": name})
    return {"metadata": {"name": name, "resourceVersion": "7"}, "spec": spec,
            "status": {"addresses": addresses}}


def info(name: str, cidrs: str = "", ips: str = "") -> NodeInfo:
    return NodeInfo(name, tuple(net(c) for c in cidrs.split(",") if c),
                    tuple(ip(a) for a in ips.split(",") if a))


# --- Node objects ------------------------------------------------------------------------------


def test_parse_node_reads_pod_cidrs_and_internal_ips_of_both_families() -> None:
    node = parse_node(node_obj("n1", ["10.244.1.0/24", "fd00:10:244:1::/64"],
                               ["192.0.2.11", "2001:db8::11"]))
    assert node == info("n1", "10.244.1.0/24,fd00:10:244:1::/64", "192.0.2.11,2001:db8::11")
    assert node.internal_ip(6) == ip("2001:db8::11")


def test_parse_node_falls_back_to_the_single_pod_cidr_and_ignores_hostname() -> None:
    node = parse_node(node_obj("n1", single="10.244.3.0/24", ips=["192.0.2.13"]))
    assert node.pod_cidrs == (net("10.244.3.0/24"),)
    assert node.internal_ips == (ip("192.0.2.13"),)


def test_parse_node_without_pod_cidrs_is_a_node_waiting_for_them() -> None:
    assert parse_node(node_obj("n1")).pod_cidrs == ()


@pytest.mark.parametrize("obj, culprit", [
    (node_obj("n1", ["10.244.1.1/24"]), "node n1: spec.podCIDRs"),
    (node_obj("n1", ["10.244.1.0/24"], ["not-an-ip"]), "node n1: status.addresses"),
    ({"spec": {}}, "metadata.name"),
])
def test_parse_node_errors_name_the_node_and_field(obj: dict[str, Any], culprit: str) -> None:
    with pytest.raises(NodeFormatError, match=culprit):
        parse_node(obj)


def test_conflicts_name_both_nodes_and_leave_the_others_alone() -> None:
    nodes = [info("a", "10.244.1.0/24"), info("b", "10.244.1.128/25"), info("c", "10.244.2.0/24"),
             info("d", "fd00::/64"), info("e", "10.244.0.0/16,fd00:1::/64")]
    conflicts = find_conflicts(nodes)
    assert set(conflicts) == {"a", "b", "c", "e"}  # e's /16 holds a, b and c
    assert "d" not in conflicts  # an IPv6 CIDR never conflicts with IPv4 ones
    pair = find_conflicts(nodes[:3])
    assert set(pair) == {"a", "b"}
    assert pair["a"] == pair["b"] == ("pod CIDR 10.244.1.128/25 of node b overlaps "
                                      "10.244.1.0/24 of node a")


def test_conflicts_found_between_any_two_of_many() -> None:
    nodes = [info(f"n{i}", f"10.244.{i}.0/24") for i in range(200)]
    nodes.append(info("late", "10.244.150.64/26"))
    assert set(find_conflicts(nodes)) == {"n150", "late"}


def test_no_conflict_between_distinct_cidrs() -> None:
    assert find_conflicts([info("a", "10.244.0.0/24"), info("b", "10.244.1.0/24")]) == {}


def test_covering_network_is_the_smallest_prefix() -> None:
    assert covering_network([net("10.244.0.0/24"), net("10.244.2.0/24")]) == net("10.244.0.0/22")
    assert covering_network([net("10.244.5.0/24")]) == net("10.244.5.0/24")
    assert covering_network([]) is None


def test_derived_cluster_cidrs_per_family_of_this_node() -> None:
    nodes = [info("a", "10.244.0.0/24,fd00:10:244::/64"), info("b", "10.244.1.0/24"),
             info("c", "fd00:10:244:3::/64")]
    assert derive_cluster_cidrs(nodes, [4, 6]) == [net("10.244.0.0/23"),
                                                   net("fd00:10:244::/62")]
    assert derive_cluster_cidrs(nodes, [4]) == [net("10.244.0.0/23")]


# --- the conflist plan -------------------------------------------------------------------------


def test_conflist_waits_for_a_node_without_pod_cidrs_or_missing() -> None:
    nodes = {"a": info("a"), "b": info("b", "10.244.1.0/24")}
    assert "no pod CIDR yet" in plan_conflist("a", nodes, {}, []).waiting
    assert "not in the API's node list" in plan_conflist("z", nodes, {}, []).waiting


def test_conflist_refuses_an_overlapping_pod_cidr() -> None:
    nodes = {"a": info("a", "10.244.1.0/24"), "b": info("b", "10.244.1.0/25")}
    plan = plan_conflist("a", nodes, find_conflicts(nodes.values()), [])
    assert "refusing" in plan.waiting and "node b" in plan.waiting and plan.pod_cidrs == ()


def test_conflist_derived_cluster_cidr_grows_and_does_not_shrink() -> None:
    nodes = {"a": info("a", "10.244.0.0/24"), "b": info("b", "10.244.3.0/24")}
    first = plan_conflist("a", nodes, {}, [])
    assert first.cluster_cidrs == (net("10.244.0.0/22"),) and first.derived
    del nodes["b"]
    again = plan_conflist("a", nodes, {}, [], first.cluster_cidrs)
    assert again.cluster_cidrs == (net("10.244.0.0/22"),)


def test_conflist_given_cluster_cidr_wins() -> None:
    nodes = {"a": info("a", "10.244.0.0/24")}
    plan = plan_conflist("a", nodes, {}, [net("10.244.0.0/16")])
    assert plan.cluster_cidrs == (net("10.244.0.0/16"),) and not plan.derived


# --- routes ------------------------------------------------------------------------------------

LOCAL = [LocalNetwork(net("192.0.2.0/24"), ip("192.0.2.10"), 2),
         LocalNetwork(net("2001:db8::/64"), ip("2001:db8::10"), 2)]


def test_routes_to_other_nodes_on_link_in_both_families() -> None:
    nodes = {"me": info("me", "10.244.0.0/24", "192.0.2.10"),
             "b": info("b", "10.244.1.0/24,fd00:1::/64", "192.0.2.11,2001:db8::11")}
    plan = plan_routes(nodes, "me", LOCAL, {})
    assert plan.wanted == (NodeRoute(net("10.244.1.0/24"), ip("192.0.2.11"), 2, "b"),
                           NodeRoute(net("fd00:1::/64"), ip("2001:db8::11"), 2, "b"))
    assert plan.notes == ()


def test_routes_skip_off_link_nodes_and_say_why() -> None:
    nodes = {"far": info("far", "10.244.9.0/24", "198.51.100.9"),
             "nov6": info("nov6", "fd00:9::/64", "192.0.2.19"),
             "waiting": info("waiting", "", "192.0.2.20"),
             "myip": info("myip", "10.244.8.0/24", "192.0.2.10")}
    plan = plan_routes(nodes, "me", LOCAL, {})
    assert plan.wanted == ()
    text = "\n".join(plan.notes)
    assert "node far: InternalIP 198.51.100.9 is not on a directly connected network" in text
    assert "node nov6: no IPv6 InternalIP" in text
    assert "node myip" in text  # an InternalIP that is this node's own address
    assert "waiting" not in text


def test_routes_leave_out_conflicting_nodes() -> None:
    nodes = {"a": info("a", "10.244.1.0/24", "192.0.2.11"),
             "b": info("b", "10.244.1.0/25", "192.0.2.12")}
    plan = plan_routes(nodes, "me", LOCAL, find_conflicts(nodes.values()))
    assert plan.wanted == () and len(plan.notes) == 2


def route(dst: str, gw: str, proto: int = ROUTE_PROTOCOL, index: int = 2) -> RouteInfo:
    return RouteInfo(dst=net(dst), gateway=ip(gw), index=index, protocol=proto)


def test_diff_adds_missing_removes_stale_ours_only() -> None:
    wanted = [NodeRoute(net("10.244.1.0/24"), ip("192.0.2.21"), 2, "b"),
              NodeRoute(net("10.244.2.0/24"), ip("192.0.2.12"), 2, "c")]
    existing = [route("10.244.1.0/24", "192.0.2.11"),  # b moved: ours, stale
                route("10.244.2.0/24", "192.0.2.12"),  # c: in place
                route("10.244.7.0/24", "192.0.2.17"),  # a node that went: ours, stale
                route("10.99.0.0/16", "192.0.2.1", proto=3)]  # not ours
    changes = diff_routes(wanted, existing)
    assert [r.dst for r in changes.remove] == [net("10.244.1.0/24"), net("10.244.7.0/24")]
    assert changes.add == (wanted[0],)
    assert changes.notes == ()


def test_diff_never_shadows_a_route_we_did_not_make() -> None:
    wanted = [NodeRoute(net("10.244.4.0/24"), ip("192.0.2.14"), 2, "d")]
    changes = diff_routes(wanted, [route("10.244.4.0/24", "192.0.2.99", proto=4)])
    assert changes.add == () and changes.remove == ()
    assert "not ours (protocol 4)" in changes.notes[0] and "left untouched" in changes.notes[0]


# --- what wakes a reconcile --------------------------------------------------------------------


def test_only_changes_the_agent_uses_ask_for_a_reconcile(tmp_path: Any) -> None:
    from cni_bridge.node_agent.agent import Agent, AgentOptions
    from cni_bridge.node_agent.api import NodeList, WatchEvent
    from cni_bridge.node_agent.watcher import Changed, Synced

    agent = Agent(AgentOptions("a", tmp_path), nl=None)  # type: ignore[arg-type]
    b = node_obj("b", ["10.244.1.0/24"], ["192.0.2.11"])
    assert agent.take(Synced(NodeList([b], "5"))) and agent.synced
    heartbeat = {**b, "metadata": {**b["metadata"], "labels": {"x": "1"}}}
    assert not agent.take(Changed(WatchEvent("MODIFIED", heartbeat)))
    moved = node_obj("b", ["10.244.1.0/24"], ["192.0.2.21"])
    assert agent.take(Changed(WatchEvent("MODIFIED", moved)))
    assert agent.take(Changed(WatchEvent("DELETED", moved)))
    assert not agent.take(Changed(WatchEvent("DELETED", moved)))  # already gone
    assert agent.take(None)  # routes/addresses changed, or the timer


def rt_notification(kind: int, proto: int, dst: str = "10.244.1.0/24",
                    gateway: str = "192.0.2.11") -> bytes:
    import struct

    network = net(dst)
    rtmsg = struct.pack("=BBBBBBBBI", 2 if network.version == 4 else 10, network.prefixlen, 0,
                        0, 254, proto, 0, 1, 0)
    packed, via = network.network_address.packed, ip(gateway).packed
    attrs = struct.pack("=HH", 4 + len(packed), 1) + packed  # RTA_DST
    attrs += struct.pack("=HH", 4 + len(via), 5) + via  # RTA_GATEWAY
    attrs += struct.pack("=HHI", 8, 4, 2)  # RTA_OIF
    return struct.pack("=IHHII", 16 + len(rtmsg) + len(attrs), kind, 0, 0, 0) + rtmsg + attrs


def test_route_notifications_that_call_for_a_look() -> None:
    from cni_bridge.node_agent.route_events import changes_in

    new_ours = rt_notification(24, ROUTE_PROTOCOL)
    del_ours = rt_notification(25, ROUTE_PROTOCOL, "fd00:10:244:1::/64", "2001:db8::11")
    del_boot, new_addr = rt_notification(25, 3), rt_notification(20, 0)
    assert changes_in(new_ours) == frozenset()  # the agent's own additions wake nothing
    assert changes_in(del_boot + new_ours) == frozenset()  # nor changes to others' routes
    assert changes_in(new_ours + del_ours) == {(net("fd00:10:244:1::/64"), ip("2001:db8::11"))}
    assert changes_in(new_addr + del_ours) is None  # what is on-link may have changed
    assert changes_in(del_ours[:-6]) is None  # cut short: look anyway


def test_a_deletion_of_ours_asks_for_a_look_only_if_still_wanted(tmp_path: Any) -> None:
    from cni_bridge.node_agent.agent import Agent, AgentOptions
    from cni_bridge.node_agent.watcher import RoutesGone

    agent = Agent(AgentOptions("a", tmp_path), nl=None)  # type: ignore[arg-type]
    agent.wanted = {(net("10.244.1.0/24"), ip("192.0.2.21"))}
    by_hand = (net("10.244.1.0/24"), ip("192.0.2.21"))
    moved_by_agent = (net("10.244.1.0/24"), ip("192.0.2.11"))  # the node's old address
    assert agent.take(RoutesGone(frozenset({by_hand})))  # put back
    assert not agent.take(RoutesGone(frozenset({moved_by_agent})))
    assert not agent.take(RoutesGone(frozenset({(net("10.244.7.0/24"), None)})))


def test_routes_are_written_with_our_protocol_and_a_refusal_stops_no_other() -> None:
    import errno

    from cni_bridge.net.netlink import Netlink
    from cni_bridge.node_agent.route_exec import apply_changes
    from cni_bridge.node_agent.route_plan import RouteChanges
    from tests.unit.test_net_requests import FakeSocket, fail, ok

    sock = FakeSocket()
    sock.script(ok(), fail(errno.ENETUNREACH), ok())
    changes = RouteChanges(
        add=(NodeRoute(net("10.244.1.0/24"), ip("192.0.2.11"), 2, "b"),
             NodeRoute(net("10.244.2.0/24"), ip("192.0.2.12"), 2, "c")),
        remove=(route("10.244.7.0/24", "192.0.2.17"),), notes=())
    logged: list[str] = []
    failed = apply_changes(Netlink(sock, None), changes, logged.append)
    assert [s.msg["proto"] for s in sock.sent] == [ROUTE_PROTOCOL] * 3  # delete matches ours only
    assert logged == ["route removed: 10.244.7.0/24 via 192.0.2.17",
                      "route added: 10.244.2.0/24 via 192.0.2.12 (node c)"]
    assert len(failed) == 1 and "10.244.1.0/24" in failed[0] and "(node b)" in failed[0]
