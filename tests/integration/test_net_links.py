"""The net layer against a real kernel: namespaces, bridges, veths, bridge ports, waits, sysctls.

All netlink work runs in this pytest process through sockets bound to throwaway namespaces
("H" stands in for the host); results are observed with ``ip -j -d`` inside those namespaces.
Nothing is ever done in the machine's own namespace.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.net import veth as net_veth
from cni_bridge.net.bridge import (
    add_bridge_vlans,
    ensure_bridge,
    get_bridge_vlans,
    remove_bridge_vlans,
    set_bridge_port_flags,
)
from cni_bridge.net.errors import (
    LinkNotFound,
    NetlinkOpError,
    SysctlError,
    WaitTimeout,
)
from cni_bridge.net.links import (
    find_link,
    get_link,
    list_links,
    remove_link,
    set_link_up,
    set_mac,
    set_master,
    wait_link_oper_up,
)
from cni_bridge.net.model import (
    BridgePortFlags,
    BridgeSpec,
    BridgeVlan,
    OperState,
    VethPair,
    VethSpec,
)
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import NetnsHandle, enter_netns, open_netns
from cni_bridge.net.sysctl import SysctlOutcome, ensure_sysctl, get_sysctl
from cni_bridge.net.veth import create_veth_pair
from tests.netns import Netns

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Side:
    """A test namespace, opened, with a netlink socket bound to it."""

    ns: Netns
    handle: NetnsHandle
    nl: Netlink

    def close(self) -> None:
        self.nl.close()
        self.handle.close()

    def link_json(self, name: str) -> Any:
        return self.ns.ip_json("link", "show", "dev", name)[0]


def in_netns(path: str) -> bool:
    """Whether the calling thread is in the namespace at `path`."""
    here, there = os.stat("/proc/thread-self/ns/net"), os.stat(path)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def open_side(ns: Netns) -> Side:
    ns.assert_not_root()
    handle = open_netns(ns.path)
    assert not in_netns(ns.path)
    return Side(ns, handle, Netlink.for_netns(handle))


@pytest.fixture
def side(netns: Callable[[str], Netns]) -> Iterator[Callable[[str], Side]]:
    made: list[Side] = []

    def make(role: str) -> Side:
        made.append(open_side(netns(role)))
        return made[-1]

    yield make
    for s in reversed(made):  # before the namespaces go (the netns fixture tears down later)
        s.close()


def make_port(h: Side, c: Side, **kw: Any) -> VethPair:
    return create_veth_pair(h.nl, c.nl, VethSpec("eth0", **kw))


# --- namespaces -------------------------------------------------------------------------------


def test_enter_netns_moves_only_for_the_block(side: Callable[[str], Side]) -> None:
    h = side("H")
    with enter_netns(h.handle):
        assert in_netns(h.ns.path)
    assert not in_netns(h.ns.path)
    with pytest.raises(RuntimeError), enter_netns(h.handle):
        raise RuntimeError("boom")
    assert not in_netns(h.ns.path)


def test_for_current_socket_stays_in_the_namespace_it_was_made_in(
    side: Callable[[str], Side],
) -> None:
    h = side("H")
    with enter_netns(h.handle):
        nl = Netlink.for_current()
    with nl:
        assert nl.netns is None
        ensure_bridge(nl, BridgeSpec("probe0"))
    assert h.link_json("probe0")["linkinfo"]["info_kind"] == "bridge"


# --- bridges ----------------------------------------------------------------------------------


def test_ensure_bridge_creates_up_with_mtu_and_is_idempotent(side: Callable[[str], Side]) -> None:
    h = side("H")
    br = ensure_bridge(h.nl, BridgeSpec("cni0", mtu=1400))
    seen = h.link_json("cni0")
    assert seen["linkinfo"]["info_kind"] == "bridge"
    assert seen["mtu"] == 1400 and "UP" in seen["flags"]
    assert (br.index, br.mac, br.mtu) == (seen["ifindex"], seen["address"], 1400)
    again = ensure_bridge(h.nl, BridgeSpec("cni0", mtu=9000))  # an existing MTU is kept
    assert again.index == br.index and again.mtu == 1400


def test_ensure_bridge_sets_an_existing_bridge_up_and_promisc(side: Callable[[str], Side]) -> None:
    h = side("H")
    h.ns.run("ip", "link", "add", "cni0", "type", "bridge")
    br = ensure_bridge(h.nl, BridgeSpec("cni0", promisc=True))
    seen = h.link_json("cni0")
    assert "UP" in seen["flags"] and seen["promiscuity"] == 1
    assert br.is_up and br.promisc


def test_ensure_bridge_refuses_a_non_bridge(side: Callable[[str], Side]) -> None:
    h = side("H")
    h.ns.run("ip", "link", "add", "cni0", "type", "veth", "peer", "name", "other")
    with pytest.raises(CniError, match='^"cni0" already exists but is not a bridge$'):
        ensure_bridge(h.nl, BridgeSpec("cni0"))


ENSURE_IN_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from cni_bridge.net.bridge import ensure_bridge
from cni_bridge.net.model import BridgeSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.net.netns import open_netns
start = float(sys.argv[3])
with open_netns(sys.argv[2]) as handle, Netlink.for_netns(handle) as nl:
    while time.time() < start:
        time.sleep(0.001)
    print(ensure_bridge(nl, BridgeSpec("cni0", mtu=1400)).index)
"""


def test_sixteen_concurrent_creators_all_succeed(side: Callable[[str], Side]) -> None:
    h = side("H")
    start = time.time() + 1.5  # every child is ready (imports done) before the race starts
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE_IN_CHILD, str(REPO), h.ns.path, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(16)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert len(h.ns.ip_json("link", "show", "type", "bridge")) == 1


def test_vlan_filtering_bridge_and_port_vlans(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    try:
        br = ensure_bridge(h.nl, BridgeSpec("cni0", vlan_filtering=True))
    except NetlinkOpError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            pytest.skip("kernel without bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
        raise
    assert br.vlan_filtering is True
    assert h.link_json("cni0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
    pair = make_port(h, c)
    set_master(h.nl, pair.host, br)
    default = get_bridge_vlans(h.nl, pair.host)
    assert default == [BridgeVlan(1, pvid=True, untagged=True)]
    remove_bridge_vlans(h.nl, pair.host, default)
    add_bridge_vlans(
        h.nl, pair.host, [BridgeVlan(100, pvid=True, untagged=True), BridgeVlan(200, 205)]
    )
    assert get_bridge_vlans(h.nl, pair.host) == [
        BridgeVlan(100, pvid=True, untagged=True),
        BridgeVlan(200, 205),
    ]


# --- veths ------------------------------------------------------------------------------------


def test_veth_pair_container_end_is_created_in_the_container(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    pair = make_port(h, c, mtu=1400, mac="02:42:0A:58:00:02")
    assert re.fullmatch(r"veth[0-9a-f]{8}", pair.host.name)
    host_seen, cont_seen = h.link_json(pair.host.name), c.link_json("eth0")
    assert host_seen["mtu"] == cont_seen["mtu"] == 1400
    assert cont_seen["address"] == "02:42:0a:58:00:02" == pair.container.mac
    assert host_seen["linkinfo"]["info_kind"] == "veth" == cont_seen["linkinfo"]["info_kind"]
    assert pair.host.peer_index == pair.container.index == cont_seen["ifindex"]
    assert pair.container.peer_index == pair.host.index == host_seen["ifindex"]
    assert pair.host.link_netnsid is not None
    assert [link["ifname"] for link in h.ns.ip_json("link", "show", "type", "veth")] == [
        pair.host.name
    ]


def test_veth_existing_container_name_fails_and_leaves_nothing(
    side: Callable[[str], Side],
) -> None:
    h, c = side("H"), side("C")
    make_port(h, c)
    with pytest.raises(CniError, match='^container veth name "eth0" already exists$'):
        make_port(h, c)
    assert len(h.ns.ip_json("link", "show", "type", "veth")) == 1


def test_veth_host_name_clash_is_retried(
    side: Callable[[str], Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, c = side("H"), side("C")
    h.ns.run("ip", "link", "add", "vethdeadbeef", "type", "veth", "peer", "name", "p0")
    names = iter(["vethdeadbeef", "vethfeedf00d"])
    monkeypatch.setattr(net_veth, "random_veth_name", lambda: next(names))
    pair = make_port(h, c)
    assert pair.host.name == "vethfeedf00d"
    assert c.link_json("eth0")["ifindex"] == pair.container.index


def test_veth_pair_with_both_ends_in_one_namespace(side: Callable[[str], Side]) -> None:
    h = side("H")
    pair = create_veth_pair(h.nl, h.nl, VethSpec("cni0.100"))
    names = {link["ifname"] for link in h.ns.ip_json("link", "show", "type", "veth")}
    assert names == {pair.host.name, "cni0.100"}
    assert pair.host.peer_index == pair.container.index


# --- ports, flags, state ----------------------------------------------------------------------


def test_bridge_port_master_flags_and_oper_up(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    pair = make_port(h, c)
    set_master(h.nl, pair.host, br)
    set_bridge_port_flags(h.nl, pair.host, BridgePortFlags(hairpin=True, isolated=True))
    set_link_up(h.nl, pair.host)
    set_link_up(c.nl, "eth0")
    up = wait_link_oper_up(h.nl, pair.host, timeout=3)
    assert up.oper_state is OperState.UP and up.master_index == br.index
    assert up.port is not None and up.port.hairpin and up.port.isolated
    seen = h.link_json(pair.host.name)
    assert seen["master"] == "cni0" and seen["operstate"] == "UP"
    slave = seen["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is True and slave["isolated"] is True
    set_bridge_port_flags(h.nl, pair.host, BridgePortFlags(hairpin=False))
    slave = h.link_json(pair.host.name)["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is False and slave["isolated"] is True
    # Without VLAN filtering support the port has no VLANs; with it, the default PVID 1.
    vlans = get_bridge_vlans(h.nl, pair.host)
    assert vlans in ([], [BridgeVlan(1, pvid=True, untagged=True)])
    set_master(h.nl, pair.host, None)
    assert "master" not in h.link_json(pair.host.name)


def test_wait_oper_up_is_woken_by_the_event(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    pair = make_port(h, c)
    set_link_up(h.nl, pair.host)
    assert get_link(h.nl, pair.host).oper_state is not OperState.UP  # no carrier yet
    raised = threading.Event()

    def peer_up_later() -> None:
        time.sleep(0.3)
        set_link_up(c.nl, "eth0")  # a different socket, in the other namespace
        raised.set()

    thread = threading.Thread(target=peer_up_later)
    started = time.monotonic()
    thread.start()
    try:
        info = wait_link_oper_up(h.nl, pair.host, timeout=5)
    finally:
        thread.join()
    elapsed = time.monotonic() - started
    assert info.oper_state is OperState.UP
    assert 0.25 < elapsed < 1.0  # bounded by the event, not by a sleep schedule


def test_wait_oper_up_timeout_names_the_state(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    pair = make_port(h, c)
    set_link_up(h.nl, pair.host)  # peer stays down
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"not operationally up after 0.3 s \(state "):
        wait_link_oper_up(h.nl, pair.host, timeout=0.3)
    assert time.monotonic() - started < 1.0


def test_set_mac_pins_the_bridge_mac(side: Callable[[str], Side]) -> None:
    h, c1, c2 = side("H"), side("C1"), side("C2")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    first = make_port(h, c1)
    set_master(h.nl, first.host, br)
    current = get_link(h.nl, br).mac
    assert current is not None
    set_mac(h.nl, br, current)
    assert h.ns.run("cat", "/sys/class/net/cni0/addr_assign_type").stdout.strip() == "3"
    second = make_port(h, c2)
    set_mac(h.nl, second.host, "02:00:00:00:00:01")  # lower than any random MAC
    set_master(h.nl, second.host, br)
    assert h.link_json("cni0")["address"] == current


def test_link_setters_lookups_and_removal(side: Callable[[str], Side]) -> None:
    h, c = side("H"), side("C")
    br = ensure_bridge(h.nl, BridgeSpec("cni0"))
    pair = make_port(h, c)
    set_master(h.nl, pair.host.name, "cni0")  # names are fine everywhere
    set_link_up(h.nl, pair.host)
    assert "UP" in h.link_json(pair.host.name)["flags"]
    assert get_link(h.nl, pair.host.index).name == pair.host.name
    assert find_link(h.nl, "nope0") is None
    with pytest.raises(LinkNotFound, match='interface "nope0" not found in network namespace'):
        get_link(h.nl, "nope0")
    assert [link.name for link in list_links(h.nl, kind="bridge")] == ["cni0"]
    assert [link.name for link in list_links(h.nl, master=br)] == [pair.host.name]
    assert {link.name for link in list_links(h.nl)} == {"lo", "cni0", pair.host.name}
    assert remove_link(h.nl, pair.host) is True
    assert remove_link(h.nl, pair.host) is False
    assert find_link(c.nl, "eth0") is None  # the peer went with it
    with pytest.raises(LinkNotFound):
        set_link_up(h.nl, "nope0")


# --- sysctls ----------------------------------------------------------------------------------


def _own(key: str) -> str:
    """This process's own value (read only: the machine's namespace is never written)."""
    return Path("/proc/sys", key.replace(".", "/")).read_text().strip()


def test_ensure_sysctl_in_a_namespace(side: Callable[[str], Side]) -> None:
    h = side("H")
    own_before = _own("net.ipv4.conf.all.arp_notify")
    want = "0" if own_before == "1" else "1"
    assert get_sysctl("net.ipv4.conf.all.arp_notify", netns=h.handle) == "0"
    outcome = ensure_sysctl("net.ipv4.conf.all.arp_notify", want, netns=h.handle)
    assert outcome is (SysctlOutcome.UNCHANGED if want == "0" else SysctlOutcome.WRITTEN)
    assert h.ns.sysctl("net.ipv4.conf.all.arp_notify") == want
    assert ensure_sysctl("net.ipv4.conf.all.arp_notify", want, netns=h.handle) is (
        SysctlOutcome.UNCHANGED
    )
    assert _own("net.ipv4.conf.all.arp_notify") == own_before


def test_ensure_sysctl_per_interface_both_ways(side: Callable[[str], Side]) -> None:
    h = side("H")
    ensure_bridge(h.nl, BridgeSpec("cnisys0"))  # exists only in H
    key = "net/ipv6/conf/cnisys0/accept_ra"
    assert ensure_sysctl(key, 0, netns=h.handle) is SysctlOutcome.WRITTEN
    assert h.ns.sysctl(key) == "0"
    with enter_netns(h.handle):  # the thread-in-namespace way: netns=None
        assert ensure_sysctl("net/ipv4/conf/cnisys0/arp_notify", 1) is SysctlOutcome.WRITTEN
    assert h.ns.sysctl("net/ipv4/conf/cnisys0/arp_notify") == "1"
    assert not os.path.exists("/proc/sys/net/ipv4/conf/cnisys0")  # back home


def test_ensure_sysctl_missing_interface(side: Callable[[str], Side]) -> None:
    h = side("H")
    with pytest.raises(SysctlError, match=r"sysctl net/ipv4/conf/eth9.5/arp_notify does not"):
        ensure_sysctl("net/ipv4/conf/eth9.5/arp_notify", 1, netns=h.handle)
