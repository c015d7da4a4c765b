"""The portmap plugin through the dispatcher, with fake backends and a fake command runner."""

from __future__ import annotations

import errno
import ipaddress
import json
import struct
import subprocess
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni_bridge import netlink
from cni_bridge.cni.dispatch import dispatch
from cni_bridge.cni.errors import CniError
from cni_bridge.firewall import policy
from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.errors import HostPortConflictError
from cni_bridge.firewall.model import IPInterface, MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.portmap import localnet, ops
from cni_bridge.portmap.plugin import PortmapPlugin

PREV: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.88.0.1"]},
}
MAPPINGS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]


@dataclass
class FakeRunner:
    """Firewall tools (none expected: the backends are fakes) and the in-process kernel work:
    route lookups and conntrack flushes, recorded as calls."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    route_dev: str = "cni0"

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append(tuple(argv))
        return CommandResult(tuple(argv), 127, "", "unexpected")

    def route(self, address: Any) -> str:
        self.calls.append(("route get", str(address)))
        return self.route_dev

    def flush(self, entries: Sequence[PortMapping]) -> int:
        self.calls += [("conntrack", f"ipv{e.version}", e.protocol, str(e.host_port))
                       for e in entries if e.protocol == "udp"]
        return 0


@dataclass
class FakeBackend:
    name: str = "fake"
    usable: bool = True
    fail_add: Exception | None = None
    fail_remove: Exception | None = None
    missing: list[str] = field(default_factory=list)
    added: list[tuple[list[PortMapping], PortmapOptions]] = field(default_factory=list)
    removed: list[tuple[Owner, list[PortMapping] | None]] = field(default_factory=list)
    removed_options: list[PortmapOptions | None] = field(default_factory=list)
    collected: list[tuple[str, list[Owner]]] = field(default_factory=list)

    def available(self) -> bool:
        return self.usable

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None:
        raise AssertionError("portmap never masquerades")

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        raise AssertionError("portmap never masquerades")

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]:
        raise AssertionError("portmap never masquerades")

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        raise AssertionError("portmap never masquerades")

    def add_portmappings(self, entries: Sequence[PortMapping], options: PortmapOptions) -> None:
        if self.fail_add:
            raise self.fail_add
        self.added.append((list(entries), options))

    def remove_portmappings(self, owner: Owner, entries: Sequence[PortMapping] | None,
                            options: PortmapOptions | None = None) -> None:
        self.removed.append((owner, None if entries is None else list(entries)))
        self.removed_options.append(options)
        if self.fail_remove:
            raise self.fail_remove

    def check_portmappings(self, entries: Sequence[PortMapping],
                           options: PortmapOptions) -> list[str]:
        return list(self.missing)

    def gc_portmappings(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        self.collected.append((network, sorted(valid_owners)))
        return [f"something of {network}"]


@dataclass
class World:
    runner: FakeRunner
    backends: dict[str, FakeBackend]
    localnet: dict[str, str]

    def call(self, command: str, config: dict[str, Any], cid: str = "c1") -> tuple[int, Any]:
        environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/run/netns/x",
                   "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
        out = dispatch("portmap", "test", environ, lambda: json.dumps(config).encode(),
                       lambda: PortmapPlugin(self.runner))
        return out.exit_code, json.loads(out.stdout) if out.stdout else None


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(FakeRunner(), {"nftables": FakeBackend("nftables"),
                             "iptables": FakeBackend("iptables")}, {})

    def detect(runner: Any, requested: str | None = None) -> FakeBackend:
        backend = w.backends[requested or "nftables"]
        if not backend.usable:
            raise CniError(f"firewall backend {requested} was requested but is not usable")
        return backend

    def recorded(name: object, runner: Any) -> FakeBackend | None:
        backend = w.backends.get(str(name))
        return backend if backend is not None and backend.usable else None

    monkeypatch.setattr(policy, "detect_backend", detect)
    monkeypatch.setattr(policy, "make_backend", lambda name, runner, **_: w.backends[name])
    monkeypatch.setattr(policy, "recorded_backend", recorded)

    def ensure(ifname: str) -> bool:
        changed = w.localnet.get(ifname) != "1"
        w.localnet[ifname] = "1"
        return changed

    monkeypatch.setattr(ops.localnet, "ensure_route_localnet", ensure)
    monkeypatch.setattr(ops.localnet, "route_interface", w.runner.route)
    monkeypatch.setattr(ops, "flush_udp_conntrack", w.runner.flush)
    monkeypatch.setattr(ops.localnet, "read_route_localnet",
                        lambda ifname: w.localnet.get(ifname, "0"))
    return w


def conf(mappings: list[Any] | None = None, prev: Any = PREV, version: str = "1.0.0",
         **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"cniVersion": version, "name": "net", "type": "portmap", **extra}
    if prev is not None:
        config["prevResult"] = prev
    if mappings is not None:
        config["runtimeConfig"] = {"portMappings": mappings}
    return config


def test_add_returns_prev_result_and_installs_once(world: World) -> None:
    rc, out = world.call("ADD", conf(MAPPINGS))
    assert rc == 0
    assert out == json.loads(json.dumps(PREV))  # passed through unchanged
    [(entries, options)] = world.backends["nftables"].added
    assert [(e.protocol, e.host_port, str(e.container_ip)) for e in entries] == [
        ("tcp", 8080, "10.88.0.5/16"), ("tcp", 8080, "fd00::5/64"),
        ("udp", 8053, "10.88.0.5/16"), ("udp", 8053, "fd00::5/64")]
    assert {e.owner for e in entries} == {Owner("net", "c1", "eth0")}
    assert options == PortmapOptions()
    assert world.localnet == {"cni0": "1"}
    conntrack = [c for c in world.runner.calls if c[0] == "conntrack"]
    assert sorted(conntrack) == [("conntrack", "ipv4", "udp", "8053"),
                                 ("conntrack", "ipv6", "udp", "8053")]


@pytest.mark.parametrize("runtime", [None, []])
def test_without_mappings_nothing_runs(world: World, runtime: list[Any] | None) -> None:
    for command in ("ADD", "CHECK", "DEL"):
        rc, out = world.call(command, conf(runtime))
        assert rc == 0
        assert out == (PREV if command == "ADD" else None)
    assert world.runner.calls == []
    assert all(not b.added and not b.removed for b in world.backends.values())


def test_without_mappings_the_firewall_layer_is_not_even_imported() -> None:
    code = (
        "import json, sys\n"
        "from cni_bridge.cni.dispatch import dispatch\n"
        "from cni_bridge.portmap.plugin import PortmapPlugin\n"
        f"config = {json.dumps(conf([]))!r}\n"
        "for verb in ('ADD', 'DEL', 'CHECK'):\n"
        "    env = {'CNI_COMMAND': verb, 'CNI_CONTAINERID': 'c', 'CNI_NETNS': '/x',\n"
        "           'CNI_IFNAME': 'eth0', 'CNI_PATH': '/x'}\n"
        "    out = dispatch('portmap', 't', env, lambda: config.encode(), PortmapPlugin)\n"
        "    assert out.exit_code == 0, out.stdout\n"
        "loaded = [m for m in sys.modules if m.startswith(('cni_bridge.firewall', 'pyroute2',\n"
        "                                                   'cni_bridge.net'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_add_needs_prev_result(world: World) -> None:
    rc, out = world.call("ADD", conf(MAPPINGS, prev=None))
    assert rc == 1 and out["code"] == 7 and out["msg"] == "must be called as chained plugin"


def test_check_needs_prev_result(world: World) -> None:
    rc, out = world.call("CHECK", conf(MAPPINGS, prev=None))
    assert rc == 1 and out["msg"] == "Required prevResult missing"


def test_add_with_no_matching_address_installs_nothing(world: World) -> None:
    v6_only = [{"hostPort": 1, "containerPort": 1, "hostIP": "2001:db8::1"}]
    prev = {**PREV, "ips": PREV["ips"][:1]}
    rc, out = world.call("ADD", conf(v6_only, prev=prev))
    assert rc == 0 and out["ips"] == prev["ips"]
    assert world.backends["nftables"].added == []


def test_no_route_localnet_without_localhost_publishing(world: World) -> None:
    only_host_ip = [{"hostPort": 1, "containerPort": 1, "hostIP": "192.0.2.1"}]
    assert world.call("ADD", conf(only_host_ip))[0] == 0
    assert world.localnet == {}
    assert not [c for c in world.runner.calls if c[0] == "route get"]
    assert world.call("ADD", conf(MAPPINGS, snat=False))[0] == 0
    assert world.localnet == {}


def test_host_port_conflict_is_reported_and_rolled_back(world: World) -> None:
    nft = world.backends["nftables"]
    nft.fail_add = HostPortConflictError(
        "host port *:8080/tcp is already published by container other (net/eth0)")
    rc, out = world.call("ADD", conf(MAPPINGS))
    assert rc == 1 and out["code"] == 110 and "container other" in out["msg"]
    assert [o for o, _ in nft.removed] == [Owner("net", "c1", "eth0")]
    assert world.localnet == {} and not world.runner.calls


def test_failed_route_localnet_removes_the_rules(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(ifname: str) -> bool:
        raise CniError(f"unable to enable route_localnet on {ifname}")

    monkeypatch.setattr(ops.localnet, "ensure_route_localnet", refuse)
    rc, out = world.call("ADD", conf(MAPPINGS))
    assert rc == 1 and "route_localnet" in out["msg"]
    nft = world.backends["nftables"]
    assert len(nft.added) == 1 and len(nft.removed) == 1


def test_backend_from_config(world: World) -> None:
    assert world.call("ADD", conf(MAPPINGS, backend="iptables"))[0] == 0
    assert world.backends["iptables"].added and not world.backends["nftables"].added
    assert world.call("ADD", conf(MAPPINGS, externalSetMarkChain="KUBE-MARK-MASQ"))[0] == 0
    assert len(world.backends["iptables"].added) == 2
    options = world.backends["iptables"].added[1][1]
    assert options.external_set_mark_chain == "KUBE-MARK-MASQ"


def test_unusable_backend_fails_add(world: World) -> None:
    world.backends["iptables"].usable = False
    rc, out = world.call("ADD", conf(MAPPINGS, backend="iptables"))
    assert rc == 1 and "not usable" in out["msg"]


def test_del_without_a_record_cleans_every_usable_backend(world: World) -> None:
    """No record proves where the owner's state is (an ADD by the reference, a config
    changed since ADD): every usable backend removes it, the configured one first."""
    conditions = ["-s", "192.0.2.0/24"]
    assert world.call("DEL", conf(MAPPINGS, backend="iptables", conditionsV4=conditions))[0] == 0
    ipt, nft = world.backends["iptables"], world.backends["nftables"]
    [(owner, entries)] = ipt.removed
    assert owner == Owner("net", "c1", "eth0") and entries is not None and len(entries) == 4
    # The conditions are in the rules' text: iptables' exact removal needs them.
    [options] = ipt.removed_options
    assert options is not None and list(options.conditions_v4) == conditions
    assert nft.removed == ipt.removed
    assert world.runner.calls == []  # no conntrack, no route lookup on DEL


def test_del_with_a_record_removes_with_the_recorded_backend_only(world: World) -> None:
    assert world.call("ADD", conf(MAPPINGS, backend="iptables"))[0] == 0
    assert world.call("DEL", conf(MAPPINGS))[0] == 0
    assert len(world.backends["iptables"].removed) == 1
    assert world.backends["nftables"].removed == []


def test_del_falls_back_to_a_usable_backend(world: World) -> None:
    world.backends["iptables"].usable = False
    assert world.call("DEL", conf(MAPPINGS, backend="iptables"))[0] == 0
    assert len(world.backends["nftables"].removed) == 1


def test_del_without_any_usable_backend_succeeds(world: World) -> None:
    for backend in world.backends.values():
        backend.usable = False
    assert world.call("DEL", conf(MAPPINGS)) == (0, None)


def test_del_without_prev_result_finds_entries_by_owner(world: World) -> None:
    assert world.call("DEL", conf(MAPPINGS, prev=None))[0] == 0
    assert world.backends["nftables"].removed == [(Owner("net", "c1", "eth0"), None)]


def test_del_without_prev_result_or_mappings_removes_what_the_record_names(
        world: World) -> None:
    """Our ADD's record names the entries: DEL removes them by key, not by owner tag (which
    reads every entry of the node)."""
    assert world.call("ADD", conf(MAPPINGS))[0] == 0
    [(added, _)] = world.backends["nftables"].added
    assert world.call("DEL", conf(None, prev=None))[0] == 0
    [(owner, removed)] = world.backends["nftables"].removed
    assert owner == Owner("net", "c1", "eth0") and removed == added


def test_del_failure_is_reported(world: World) -> None:
    world.backends["nftables"].fail_remove = CniError("cannot remove nftables entries", "boom")
    world.backends["iptables"].fail_remove = CniError("cannot remove iptables rules")
    rc, out = world.call("DEL", conf(MAPPINGS))
    assert rc == 1 and out["msg"] == "cannot remove port mappings of container c1 (net/eth0)"
    assert out["details"] == ("nftables: cannot remove nftables entries: boom; "
                              "iptables: cannot remove iptables rules")


def test_check_lists_what_is_missing(world: World) -> None:
    assert world.call("CHECK", conf(MAPPINGS))[0] == 1  # route_localnet not set yet
    world.localnet["cni0"] = "1"
    assert world.call("CHECK", conf(MAPPINGS)) == (0, None)
    world.backends["nftables"].missing = ["element tcp . 8080 in nft map hostport_any4 is missing"]
    world.localnet["cni0"] = "0"
    rc, out = world.call("CHECK", conf(MAPPINGS))
    assert rc == 1 and "c1" in out["msg"]
    assert "hostport_any4" in out["details"]
    assert "net.ipv4.conf.cni0.route_localnet is 0" in out["details"]


def test_gc_gives_every_usable_backend_the_valid_owners(world: World) -> None:
    config = conf(None, prev=None, version="1.1.0")
    config["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "eth0"},
                                           {"containerID": "b", "ifname": "net1"}]
    assert world.call("GC", config) == (0, None)
    valid = [Owner("net", "a", "eth0"), Owner("net", "b", "net1")]
    assert world.backends["nftables"].collected == [("net", valid)]
    assert world.backends["iptables"].collected == [("net", valid)]


def test_status(world: World) -> None:
    config = conf(None, prev=None, version="1.1.0")
    assert world.call("STATUS", config) == (0, None)
    world.backends["iptables"].usable = False
    rc, out = world.call("STATUS", {**config, "backend": "iptables"})
    assert rc == 1 and out["code"] == 50


def test_config_errors_come_first(world: World) -> None:
    rc, out = world.call("ADD", conf([{"hostPort": 70000, "containerPort": 1}]))
    assert rc == 1 and out["code"] == 7 and "Invalid host port number: 70000" in out["msg"]
    assert not world.runner.calls


# --- route lookups -------------------------------------------------------------------------------


class FakeRouteSocket:
    """Answers RTM_GETROUTE like the kernel: a route via `oif`, or an error."""

    def __init__(self, oif: int | None = 1, error: int = 0) -> None:
        self.oif, self.error = oif, error
        self.requests: list[tuple[int, bytes]] = []

    def __call__(self, protocol: int) -> FakeRouteSocket:
        assert protocol == netlink.NETLINK_ROUTE
        return self

    def __enter__(self) -> FakeRouteSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(self, msg_type: int, payload: bytes, flags: int = 0) -> list[tuple[int, bytes]]:
        self.requests.append((msg_type, payload))
        if self.error:
            raise netlink.KernelError(self.error)
        attrs = netlink.attr(localnet.RTA_DST, payload[-4:])
        if self.oif is not None:
            attrs += netlink.attr(localnet.RTA_OIF, struct.pack("=I", self.oif))
        return [(localnet.RTM_NEWROUTE, payload[:12] + attrs)]


def test_route_interface_asks_the_kernel_once(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeRouteSocket(oif=1)  # index 1 is lo in every namespace
    monkeypatch.setattr(localnet, "NetlinkSocket", kernel)
    assert localnet.route_interface(ipaddress.ip_address("10.0.0.2")) == "lo"
    [(msg_type, payload)] = kernel.requests
    assert msg_type == localnet.RTM_GETROUTE
    assert payload[:2] == bytes([2, 32])  # AF_INET, a /32 destination
    assert netlink.parse_attrs(payload[12:]) == {localnet.RTA_DST: bytes([10, 0, 0, 2])}
    localnet.route_interface(ipaddress.ip_address("fd00::2"))
    assert kernel.requests[1][1][:2] == bytes([10, 128])


@pytest.mark.parametrize("kernel", [FakeRouteSocket(error=errno.ENETUNREACH),
                                    FakeRouteSocket(oif=None)])
def test_route_interface_without_a_route(monkeypatch: pytest.MonkeyPatch,
                                         kernel: FakeRouteSocket) -> None:
    monkeypatch.setattr(localnet, "NetlinkSocket", kernel)
    assert localnet.route_interface(ipaddress.ip_address("10.0.0.2")) == ""


def test_route_localnet_is_written_once_and_a_missing_interface_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cni_bridge.portmap import localnet

    monkeypatch.setattr(localnet, "PROC_CONF", str(tmp_path))
    (tmp_path / "cni0").mkdir()
    (tmp_path / "cni0" / "route_localnet").write_text("0\n")
    assert localnet.ensure_route_localnet("cni0") is True
    assert (tmp_path / "cni0" / "route_localnet").read_text() == "1"
    assert localnet.ensure_route_localnet("cni0") is False  # already right: not written again
    with pytest.raises(CniError) as err:
        localnet.ensure_route_localnet("gone0")
    assert err.value.msg == ("unable to enable route_localnet: cannot set sysctl "
                             "net.ipv4.conf.gone0.route_localnet to 1 (currently None)")
    assert err.value.details == "no such interface"
