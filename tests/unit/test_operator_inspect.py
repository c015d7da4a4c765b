"""The state behind ``status``, ``gc --dry-run`` and ``reconcile``, from temp files and a fake
firewall backend (no root needed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.admin import examine as inspect
from cni_bridge.admin.runtime import Attachment, Runtime
from cni_bridge.deploy import confdir
from cni_bridge.deploy.confdir import parse_network_list
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.firewall import recorded
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.node import records

BRIDGE_REC: dict[str, Any] = {
    "masq": [{"address": "172.18.0.2/16", "subnet": "172.18.0.0/16"}],
    "backend": "nftables",
}
PORTMAP_REC: dict[str, Any] = {
    "mappings": [
        {"protocol": "tcp", "hostPort": 8080, "containerIP": "172.18.0.2/16",
         "containerPort": 80, "hostIP": ""},
        {"protocol": "udp", "hostPort": 53, "containerIP": "172.18.0.2/16",
         "containerPort": 53, "hostIP": "198.51.100.1"},
    ],
    "options": {"snat": True, "masqAll": False, "markMasqBit": 13},
    "backend": "nftables",
}


class FakeBackend:
    """Remembers what was added; `present` decides what check_* reports missing."""

    name = "nftables"

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.added: list[Any] = []

    def check_masquerade(self, entries: Sequence[MasqEntry]) -> list[str]:
        return [f"masq {e.address}" for e in entries if f"masq {e.address}" not in self.present]

    def check_portmappings(self, entries: Sequence[PortMapping],
                           options: PortmapOptions) -> list[str]:
        return [f"port {e.describe()}" for e in entries
                if f"port {e.describe()}" not in self.present]

    def add_masquerade(self, entries: Sequence[MasqEntry]) -> None:
        self.added.append(("masq", list(entries)))
        self.present |= {f"masq {e.address}" for e in entries}

    def add_portmappings(self, entries: Sequence[PortMapping], options: PortmapOptions) -> None:
        self.added.append(("ports", list(entries), options))
        self.present |= {f"port {e.describe()}" for e in entries}


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(inspect, "record_backend", lambda rec: fake)
    return fake


def record(plugin: str, data: dict[str, Any], cid: str = "c1",
           network: str = "cni-bridge") -> records.Record:
    return records.Record(network, cid, "eth0", plugin, data)


def save(root: Path, rec: records.Record) -> None:
    records.save_record(root, rec)


# --- configuration -----------------------------------------------------------------------------


def test_network_conf_of_the_default() -> None:
    conf = confdir.NetworkConf.of(parse_network_list(DEFAULT_CONFLIST))
    assert conf.bridge == "br0" and conf.subnets == ("172.18.0.0/16",)
    assert conf.data_dir == "/var/lib/cni/networks" and conf.backend is None


def test_network_conf_defaults_and_backend() -> None:
    net = parse_network_list({"cniVersion": "1.1.0", "name": "n", "plugins": [
        {"type": "bridge", "ipMasqBackend": "iptables",
         "ipam": {"type": "static"}}]})
    conf = confdir.NetworkConf.of(net)
    assert conf.bridge == "cni0" and conf.data_dir is None and conf.backend == "iptables"
    no_bridge = parse_network_list({"name": "n", "plugins": [{"type": "macvlan"}]})
    assert confdir.NetworkConf.of(no_bridge).bridge is None


def test_load_conf_dir_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "10-good.conflist").write_text('{"name": "good", "plugins": [{"type": "x"}]}')
    (tmp_path / "20-bad.conflist").write_text("{")
    (tmp_path / "README").write_text("not a conf")
    confs, problems = confdir.load_conf_dir(tmp_path)
    assert [c.net.name for c in confs] == ["good"]
    assert len(problems) == 1 and "20-bad.conflist" in problems[0]


# --- records -> firewall entries ---------------------------------------------------------------


def test_masq_entries_from_a_bridge_record() -> None:
    (entry,) = recorded.masq_entries(record("bridge", BRIDGE_REC))
    assert entry == MasqEntry(Owner("cni-bridge", "c1", "eth0"),
                              ipaddress.ip_interface("172.18.0.2/16"),
                              ipaddress.ip_network("172.18.0.0/16"))


def test_masq_entries_keep_the_recorded_non_masquerade_networks() -> None:
    """What the bridge recorded at ADD is what reconcile puts back."""
    from cni_bridge.bridge.masq import masq_record_data

    entry = MasqEntry.of(Owner("cni-bridge", "c1", "eth0"), ipaddress.ip_interface("10.244.1.5/24"),
                         [ipaddress.ip_network("10.244.0.0/16")])
    data = {"masq": [masq_record_data(entry)], "backend": "nftables"}
    assert data["masq"][0]["nonMasquerade"] == ["10.244.0.0/16"]
    assert recorded.masq_entries(record("bridge", data)) == [entry]


def test_port_entries_from_a_portmap_record() -> None:
    mappings, options = recorded.port_entries(record("portmap", PORTMAP_REC))
    assert [m.describe() for m in mappings] == ["*:8080/tcp", "198.51.100.1:53/udp"]
    assert mappings[0].container_ip == ipaddress.ip_interface("172.18.0.2/16")
    assert mappings[0].owner == Owner("cni-bridge", "c1", "eth0")
    assert options == PortmapOptions(snat=True, masq_all=False, mark_masq_bit=13)


def test_port_options_accept_snake_case() -> None:
    data = {**PORTMAP_REC, "options": {"masq_all": True, "conditions_v4": ["a"]}}
    _, options = recorded.port_entries(record("portmap", data))
    assert options.masq_all and options.conditions_v4 == ("a",)


def test_describe_mapping() -> None:
    assert inspect.describe_mapping(PORTMAP_REC["mappings"][0]) == "8080->80/tcp"
    assert inspect.describe_mapping(PORTMAP_REC["mappings"][1]) == "198.51.100.1:53->53/udp"
    assert inspect.describe_mapping({"hostIP": "fd00::1", "hostPort": 1, "containerPort": 2,
                                     "protocol": "sctp"}) == "[fd00::1]:1->2/sctp"
    # As containerd's CRI sends them (Go's case-insensitive field names).
    assert inspect.describe_mapping({"HostPort": 8080, "ContainerPort": 80, "Protocol": "udp",
                                     "HostIP": "198.51.100.1"}) == "198.51.100.1:8080->80/udp"


# --- reconcile ---------------------------------------------------------------------------------


def test_reconcile_restores_only_what_is_missing(tmp_path: Path, backend: FakeBackend) -> None:
    save(tmp_path, record("bridge", BRIDGE_REC))
    save(tmp_path, record("portmap", PORTMAP_REC))
    save(tmp_path, record("bridge", {**BRIDGE_REC, "masq": [
        {"address": "10.0.0.2/24", "subnet": "10.0.0.0/24"}]}, "c9", "other"))
    backend.present.add("masq 172.18.0.2/16")
    items = inspect.reconcile(tmp_path)
    summary = [(i.network, i.container_id, i.plugin, i.missing_before, i.error) for i in items]
    assert summary == [
        ("cni-bridge", "c1", "bridge", [], ""),
        ("cni-bridge", "c1", "portmap", ["port *:8080/tcp", "port 198.51.100.1:53/udp"], ""),
        ("other", "c9", "bridge", ["masq 10.0.0.2/24"], ""),
    ]
    assert [a[0] for a in backend.added] == ["ports", "masq"]
    assert inspect.reconcile(tmp_path, "cni-bridge")[1].missing_before == []  # idempotent


def test_reconcile_reports_a_damaged_record_and_goes_on(tmp_path: Path,
                                                        backend: FakeBackend) -> None:
    save(tmp_path, record("bridge", {"masq": [{"address": "not-an-ip"}]}, "bad"))
    save(tmp_path, record("bridge", BRIDGE_REC, "good"))
    items = {i.container_id: i for i in inspect.reconcile(tmp_path)}
    assert "not-an-ip" in items["bad"].error
    assert items["good"].missing_before == ["masq 172.18.0.2/16"] and not items["good"].error


# --- attachments -------------------------------------------------------------------------------


def conf_with(tmp_path: Path) -> confdir.NetworkConf:
    doc = {**DEFAULT_CONFLIST, "plugins": [dict(p) for p in DEFAULT_CONFLIST["plugins"]]}
    doc["plugins"][0]["ipam"] = {**doc["plugins"][0]["ipam"], "dataDir": str(tmp_path / "data")}
    return confdir.NetworkConf.of(parse_network_list(doc))


def test_attachments_merge_store_cache_and_records(tmp_path: Path, backend: FakeBackend) -> None:
    conf = conf_with(tmp_path)
    store = tmp_path / "data" / "cni-bridge"
    store.mkdir(parents=True)
    (store / "172.18.0.2").write_bytes(b"c1\r\neth0")
    (store / "172.18.0.9").write_bytes(b"legacy")
    (store / "last_reserved_ip.0").write_text("172.18.0.9")
    (store / "lock").write_text("")
    runtime = Runtime([], tmp_path / "cache")
    runtime._cache_write(conf.net, Attachment("c1", "eth0", "/run/netns/x"), {
        "interfaces": [{"name": "br0"}, {"name": "veth9"},
                       {"name": "eth0", "sandbox": "/run/netns/x"}]})
    save(tmp_path / "state", record("portmap", PORTMAP_REC))
    save(tmp_path / "state", record("bridge", BRIDGE_REC))
    backend.present.add("masq 172.18.0.2/16")
    atts = inspect.collect_attachments(conf, runtime, tmp_path / "state")
    assert [(a.container_id, a.ifname, a.sources) for a in atts] == [
        ("c1", "eth0", ["store", "cache", "record"]), ("legacy", "?", ["store"])]
    c1 = atts[0]
    assert c1.addresses == ["172.18.0.2"] and c1.host_veth == "veth9"
    assert c1.netns == "/run/netns/x"
    assert c1.ports == ["8080->80/tcp", "198.51.100.1:53->53/udp"]
    assert c1.rules == "missing: port *:8080/tcp; port 198.51.100.1:53/udp"
    assert atts[1].rules == "no record"


def test_gc_candidates(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    store = tmp_path / "data" / "cni-bridge"
    store.mkdir(parents=True)
    for ip, owner in (("172.18.0.2", b"keep\r\neth0"), ("172.18.0.3", b"stale\r\neth0"),
                      ("172.18.0.4", b"keep\r\neth1"), ("172.18.0.5", b"keep")):
        (store / ip).write_bytes(owner)
    runtime = Runtime([], tmp_path / "cache")
    stale = inspect.gc_candidates(conf, runtime, tmp_path / "state", [("keep", "eth0")])
    # A legacy reservation (container ID only) of a valid container is kept, as host-local does.
    assert [(a.container_id, a.ifname, a.addresses) for a in stale] == [
        ("keep", "eth1", ["172.18.0.4"]), ("stale", "eth0", ["172.18.0.3"])]
