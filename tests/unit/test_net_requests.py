"""The requests the net layer sends, and how it reacts to answers, against a scripted socket.

No root and no namespace: a fake socket records every request in its wire form (encoded exactly
as the real socket does, then decoded again, so what is checked is what the kernel would get) and
answers from a script. Needs pyroute2 for the message classes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.net import veth
from cni_bridge.net._codec import encode
from cni_bridge.net._parse import attr
from cni_bridge.net.addresses import ensure_address
from cni_bridge.net.bridge import (
    add_bridge_vlans,
    ensure_bridge,
    remove_bridge_vlans,
    set_bridge_port_flags,
)
from cni_bridge.net.errors import LinkNotFound, NetlinkOpError
from cni_bridge.net.links import get_link, link_msg, remove_link, set_link_up
from cni_bridge.net.model import BridgePortFlags, BridgeSpec, BridgeVlan, RouteSpec, VethSpec
from cni_bridge.net.neighbours import remove_neighbour
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import NetnsHandle
from cni_bridge.net.routes import add_route, remove_route
from cni_bridge.net.veth import create_veth_pair
from cni_bridge.netlink import HDR, NLM_F_ACK, NLM_F_REQUEST, KernelError

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE, RTM_DELROUTE, RTM_DELNEIGH = 20, 24, 25, 29
NLM_F_CREATE, NLM_F_EXCL, NLM_F_APPEND = 0x400, 0x200, 0x800
AF_BRIDGE = 7


@dataclass
class Sent:
    msg_type: int
    flags: int
    msg: Any  # decoded again from the wire bytes
    wire: bytes


Answer = Callable[[Sent], list[Any]]


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.answers: list[Answer] = []

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        payload = encode(msg)
        wire = HDR.pack(HDR.size + len(payload), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK,
                        len(self.sent) + 1, 0) + payload
        decoded = type(msg)(wire)
        decoded.decode()
        sent = Sent(msg_type, flags, decoded, wire)
        self.sent.append(sent)
        assert self.answers, f"unexpected request type {msg_type}"
        return self.answers.pop(0)(sent)

    def close(self) -> None:
        pass


def ok(*replies: Any) -> Answer:
    return lambda sent: list(replies)


def fail(code: int, extack: str = "") -> Answer:
    def answer(sent: Sent) -> list[Any]:
        raise KernelError(code, extack)

    return answer


def link(index: int, name: str, kind: str | None, flags: int = 0x1, **extra: Any) -> dict[str, Any]:
    attrs: list[Any] = [["IFLA_IFNAME", name], ["IFLA_MTU", 1500], ["IFLA_OPERSTATE", "DOWN"]]
    if kind:
        attrs.append(["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", kind]]}])
    attrs += [[k, v] for k, v in extra.items()]
    return {"index": index, "flags": flags, "attrs": attrs}


@pytest.fixture
def fake() -> FakeSocket:
    return FakeSocket()


@pytest.fixture
def nl(fake: FakeSocket) -> Netlink:
    return Netlink(fake, None)


@pytest.fixture
def container(tmp_path: Any) -> Iterator[tuple[FakeSocket, Netlink]]:
    fd = os.open(os.devnull, os.O_RDONLY)  # stands in for the namespace fd
    handle = NetnsHandle("/run/netns/fake", fd)
    sock = FakeSocket()
    yield sock, Netlink(sock, handle)
    handle.close()


def nested_flag(wire: bytes, attr_type: int) -> bool:
    """Whether the top-level attribute ``attr_type`` of an ifinfmsg carries NLA_F_NESTED."""
    pos = 16 + 16  # nlmsghdr + ifinfomsg
    while pos + 4 <= len(wire):
        length, kind = struct.unpack_from("=HH", wire, pos)
        if kind & 0x3FFF == attr_type:
            return bool(kind & 0x8000)
        pos += (length + 3) & ~3
    raise AssertionError(f"attribute {attr_type} not in message")


# --- bridge -----------------------------------------------------------------------------------


def test_ensure_bridge_creates_it_up_with_mtu_in_one_request(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), ok(link(4, "cni0", "bridge", flags=0x1043)))
    br = ensure_bridge(nl, BridgeSpec("cni0", mtu=1400, promisc=True))
    create = fake.sent[0]
    assert create.msg_type == RTM_NEWLINK and create.flags & (NLM_F_CREATE | NLM_F_EXCL)
    assert attr(create.msg, "IFLA_IFNAME") == "cni0"
    assert attr(create.msg, "IFLA_MTU") == 1400
    assert attr(attr(create.msg, "IFLA_LINKINFO"), "IFLA_INFO_KIND") == "bridge"
    assert attr(attr(create.msg, "IFLA_LINKINFO"), "IFLA_INFO_DATA") is None
    assert create.msg["flags"] == create.msg["change"] == 0x101  # IFF_UP | IFF_PROMISC
    assert (br.index, br.kind) == (4, "bridge")


def test_ensure_bridge_with_vlan_filtering(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), ok(link(4, "cni0", "bridge")))
    ensure_bridge(nl, BridgeSpec("cni0", vlan_filtering=True))
    data = attr(attr(fake.sent[0].msg, "IFLA_LINKINFO"), "IFLA_INFO_DATA")
    assert attr(data, "IFLA_BR_VLAN_FILTERING") == 1


def test_ensure_bridge_existing_down_bridge_is_set_up(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(
        fail(errno.EEXIST),
        ok(link(4, "cni0", "bridge", flags=0)),
        ok(),
        ok(link(4, "cni0", "bridge", flags=1)),
    )
    br = ensure_bridge(nl, BridgeSpec("cni0", mtu=9000))
    assert [s.msg_type for s in fake.sent] == [RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK, RTM_GETLINK]
    up = fake.sent[2].msg
    assert up["index"] == 4 and up["flags"] == 1 and up["change"] == 1
    assert attr(up, "IFLA_MTU") is None  # an existing bridge keeps its MTU
    assert br.is_up


def test_ensure_bridge_existing_up_bridge_needs_no_change(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.EEXIST), ok(link(4, "cni0", "bridge", flags=1)))
    assert ensure_bridge(nl, BridgeSpec("cni0")).index == 4
    assert len(fake.sent) == 2


def test_ensure_bridge_rejects_a_non_bridge(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.EEXIST), ok(link(4, "cni0", "dummy")))
    with pytest.raises(CniError, match='^"cni0" already exists but is not a bridge$'):
        ensure_bridge(nl, BridgeSpec("cni0"))


def test_ensure_bridge_vanishing_after_eexist_is_retried(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.EEXIST), fail(errno.ENODEV), ok(), ok(link(4, "cni0", "bridge")))
    assert ensure_bridge(nl, BridgeSpec("cni0")).index == 4


def test_ensure_bridge_vlan_filtering_unsupported(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.EOPNOTSUPP))
    with pytest.raises(NetlinkOpError) as info:
        ensure_bridge(nl, BridgeSpec("cni0", vlan_filtering=True))
    assert info.value.errno == errno.EOPNOTSUPP
    assert info.value.msg.startswith('cannot create bridge "cni0" with vlan_filtering')
    assert "CONFIG_BRIDGE_VLAN_FILTERING" in info.value.details


def test_bridge_port_flags_use_nested_protinfo_in_af_bridge(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok())
    set_bridge_port_flags(nl, 7, BridgePortFlags(hairpin=True, isolated=False))
    sent = fake.sent[0]
    assert sent.msg_type == RTM_SETLINK
    assert sent.msg["family"] == AF_BRIDGE and sent.msg["index"] == 7
    protinfo = attr(sent.msg, "IFLA_PROTINFO")
    assert attr(protinfo, "IFLA_BRPORT_MODE") == 1
    assert attr(protinfo, "IFLA_BRPORT_ISOLATED") == 0
    assert nested_flag(sent.wire, 12)  # the kernel ignores a non-nested IFLA_PROTINFO


def test_bridge_port_flags_nothing_to_do(fake: FakeSocket, nl: Netlink) -> None:
    set_bridge_port_flags(nl, 7, BridgePortFlags())
    assert fake.sent == []


def test_add_bridge_vlans_in_one_request(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok())
    vlans = [BridgeVlan(100, pvid=True, untagged=True), BridgeVlan(200, 210)]
    add_bridge_vlans(nl, 7, vlans)
    sent = fake.sent[0]
    assert sent.msg_type == RTM_SETLINK and sent.msg["family"] == AF_BRIDGE
    infos = [(i["flags"], i["vid"]) for n, i in attr(sent.msg, "IFLA_AF_SPEC")["attrs"]]
    assert infos == [(0x6, 100), (0x8, 200), (0x10, 210)]


def test_remove_bridge_vlans_never_deletes_the_link(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), fail(errno.ENOENT))
    remove_bridge_vlans(nl, 7, [BridgeVlan(1), BridgeVlan(5)])  # VLAN 5 already gone: fine
    for sent in fake.sent:
        assert sent.msg_type == RTM_DELLINK
        assert sent.msg["family"] == AF_BRIDGE  # AF_UNSPEC here would delete interface 7
        assert attr(sent.msg, "IFLA_AF_SPEC") is not None


# --- links and veths --------------------------------------------------------------------------


def test_link_by_name_is_resolved_by_the_kernel(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok())
    set_link_up(nl, "eth0")
    assert fake.sent[0].msg["index"] == 0
    assert attr(fake.sent[0].msg, "IFLA_IFNAME") == "eth0"


def test_get_link_missing(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.ENODEV))
    with pytest.raises(LinkNotFound, match='interface "eth9" not found'):
        get_link(nl, "eth9")


def test_remove_link_tolerates_gone_and_reports_other_errors(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), fail(errno.ENODEV), fail(errno.EPERM, "no way"))
    assert remove_link(nl, "eth0") is True
    assert remove_link(nl, "eth0") is False
    with pytest.raises(NetlinkOpError) as info:
        remove_link(nl, 9)
    assert info.value.errno == errno.EPERM
    assert str(info.value) == "cannot delete interface index 9: Operation not permitted: no way"


def test_veth_peer_is_created_in_the_container_namespace(
    fake: FakeSocket, nl: Netlink, container: tuple[FakeSocket, Netlink]
) -> None:
    csock, cnl = container
    fake.script(ok(), ok(link(5, "vethabcdef01", "veth")))
    csock.script(ok(link(2, "eth0", "veth")))
    spec = VethSpec("eth0", mtu=1400, mac="02:42:AC:11:00:02", host_name="vethabcdef01")
    pair = create_veth_pair(nl, cnl, spec)
    create = fake.sent[0].msg
    assert attr(create, "IFLA_IFNAME") == "vethabcdef01" and attr(create, "IFLA_MTU") == 1400
    info = attr(create, "IFLA_LINKINFO")
    assert attr(info, "IFLA_INFO_KIND") == "veth"
    peer = attr(attr(info, "IFLA_INFO_DATA"), "VETH_INFO_PEER")
    assert attr(peer, "IFLA_IFNAME") == "eth0"
    assert attr(peer, "IFLA_MTU") == 1400
    assert attr(peer, "IFLA_ADDRESS") == "02:42:ac:11:00:02"
    assert attr(peer, "IFLA_NET_NS_FD") == cnl.netns.fileno()  # type: ignore[union-attr]
    assert (pair.host.name, pair.container.name) == ("vethabcdef01", "eth0")


def test_veth_host_name_clash_is_retried(
    fake: FakeSocket,
    nl: Netlink,
    container: tuple[FakeSocket, Netlink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = iter(["veth00000001", "veth00000002"])
    monkeypatch.setattr(veth, "random_veth_name", lambda: next(names))
    csock, cnl = container
    fake.script(fail(errno.EEXIST), ok(), ok(link(6, "veth00000002", "veth")))
    # eth0 is free in the container, so it was the host name that clashed
    csock.script(fail(errno.ENODEV), ok(link(2, "eth0", "veth")))
    pair = create_veth_pair(nl, cnl, VethSpec("eth0"))
    assert pair.host.name == "veth00000002"
    assert [attr(s.msg, "IFLA_IFNAME") for s in fake.sent[:2]] == ["veth00000001", "veth00000002"]


def test_veth_existing_container_name_is_an_error(
    fake: FakeSocket, nl: Netlink, container: tuple[FakeSocket, Netlink]
) -> None:
    csock, cnl = container
    fake.script(fail(errno.EEXIST))
    csock.script(ok(link(2, "eth0", "veth")))
    with pytest.raises(CniError, match='^container veth name "eth0" already exists$'):
        create_veth_pair(nl, cnl, VethSpec("eth0"))


def test_veth_container_socket_must_match(
    fake: FakeSocket, container: tuple[FakeSocket, Netlink]
) -> None:
    _, in_netns = container
    with pytest.raises(ValueError):
        create_veth_pair(in_netns, Netlink(fake, None), VethSpec("eth0"))


def test_veth_with_both_ends_in_one_namespace(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), ok(link(5, "veth00000009", "veth")), ok(link(6, "cni0.100", "veth")))
    pair = create_veth_pair(nl, nl, VethSpec("cni0.100", host_name="veth00000009"))
    info = attr(fake.sent[0].msg, "IFLA_LINKINFO")
    peer = attr(attr(info, "IFLA_INFO_DATA"), "VETH_INFO_PEER")
    assert attr(peer, "IFLA_IFNAME") == "cni0.100"
    assert attr(peer, "IFLA_NET_NS_FD") is None
    assert pair.container.name == "cni0.100"


# --- addresses, routes, neighbours ------------------------------------------------------------


def test_ipv4_address_gets_broadcast_and_no_flags(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), fail(errno.EEXIST))
    assert ensure_address(nl, 3, ipaddress.ip_interface("10.88.0.1/16"), nodad=True) is True
    assert ensure_address(nl, 3, ipaddress.ip_interface("10.88.0.1/16")) is False  # already there
    msg = fake.sent[0].msg
    assert fake.sent[0].msg_type == RTM_NEWADDR
    assert (msg["family"], msg["prefixlen"], msg["index"], msg["flags"]) == (2, 16, 3, 0)
    assert attr(msg, "IFA_LOCAL") == attr(msg, "IFA_ADDRESS") == "10.88.0.1"
    assert attr(msg, "IFA_BROADCAST") == "10.88.255.255"
    assert attr(msg, "IFA_FLAGS") is None  # NODAD is an IPv6 thing


def test_ipv6_address_nodad(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok())
    ensure_address(nl, 3, ipaddress.ip_interface("fd00::1/64"), nodad=True)
    msg = fake.sent[0].msg
    assert msg["family"] == 10 and msg["flags"] == 0x02
    assert attr(msg, "IFA_FLAGS") == 0x02 and attr(msg, "IFA_BROADCAST") is None


def test_route_add_defaults(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), ok())
    gw = ipaddress.ip_address("10.88.0.1")
    add_route(nl, RouteSpec(ipaddress.ip_network("0.0.0.0/0"), gateway=gw))
    add_route(nl, RouteSpec(ipaddress.ip_network("10.1.0.0/16"), index=3), append=True)
    default, onlink = fake.sent[0], fake.sent[1]
    assert default.flags & NLM_F_EXCL and not default.flags & NLM_F_APPEND
    assert onlink.flags & NLM_F_APPEND and not onlink.flags & NLM_F_EXCL
    assert attr(default.msg, "RTA_DST") is None and default.msg["dst_len"] == 0
    assert attr(default.msg, "RTA_GATEWAY") == "10.88.0.1"
    assert (default.msg["scope"], default.msg["type"], default.msg["proto"]) == (0, 1, 3)
    assert attr(default.msg, "RTA_TABLE") == 254 == default.msg["table"]
    assert onlink.msg["scope"] == 253 and attr(onlink.msg, "RTA_OIF") == 3


def test_route_add_table_metric_and_metrics(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok())
    spec = RouteSpec(
        ipaddress.ip_network("2001:db8::/64"),
        gateway=ipaddress.ip_address("fd00::1"),
        priority=50,
        table=1000,
        mtu=1300,
        advmss=1200,
    )
    add_route(nl, spec)
    msg = fake.sent[0].msg
    assert msg["family"] == 10 and msg["dst_len"] == 64 and msg["scope"] == 0
    assert attr(msg, "RTA_TABLE") == 1000 and msg["table"] == 0  # > 255: only in RTA_TABLE
    assert attr(msg, "RTA_PRIORITY") == 50
    metrics = attr(msg, "RTA_METRICS")
    assert (attr(metrics, "RTAX_MTU"), attr(metrics, "RTAX_ADVMSS")) == (1300, 1200)


def test_route_remove_is_a_wildcard_match_and_tolerant(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), fail(errno.ESRCH))
    spec = RouteSpec(ipaddress.ip_network("10.1.0.0/16"), index=3)
    assert remove_route(nl, spec) is True
    assert remove_route(nl, spec) is False
    msg = fake.sent[0].msg
    assert fake.sent[0].msg_type == RTM_DELROUTE
    assert (msg["scope"], msg["proto"], msg["type"]) == (255, 0, 0)


def test_route_errors_name_the_route(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(fail(errno.ENETUNREACH, "Nexthop has invalid gateway"))
    spec = RouteSpec(ipaddress.ip_network("10.1.0.0/16"), gateway=ipaddress.ip_address("10.9.9.9"))
    with pytest.raises(NetlinkOpError) as info:
        add_route(nl, spec)
    assert info.value.msg == "cannot add route 10.1.0.0/16 via 10.9.9.9: Network is unreachable"
    assert info.value.details == "Nexthop has invalid gateway"


def test_remove_neighbour(fake: FakeSocket, nl: Netlink) -> None:
    fake.script(ok(), fail(errno.ENOENT))
    assert remove_neighbour(nl, 4, ipaddress.ip_address("10.88.0.5")) is True
    assert remove_neighbour(nl, 4, ipaddress.ip_address("10.88.0.5")) is False
    msg = fake.sent[0].msg
    assert fake.sent[0].msg_type == RTM_DELNEIGH
    assert (msg["family"], msg["ifindex"]) == (2, 4)
    assert attr(msg, "NDA_DST") == "10.88.0.5"


def test_a_request_encodes_the_same_when_resent(nl: Netlink) -> None:
    """A dump interrupted by a concurrent change is sent again: the bytes must not change."""
    msg = link_msg(nl, "cni0")
    msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
    first = encode(msg)
    again = encode(msg)
    assert first == again
