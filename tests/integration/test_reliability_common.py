"""Shared pieces of the reliability tests (churn soak, crash consistency, restart and reload).

`World` is one "node": the namespace H the plugins run in (linked to the outside namespace O when
asked), a conflist of bridge + host-local + portmap on a small subnet with a temporary `dataDir`,
the mini-runtime with its own cache directory, and readers for everything an attachment can leave
behind (reservation files, host veths, firewall entries, records). Nothing here touches the
machine's own namespace: every command goes through `Netns.run` or the runtime's `ip netns exec`.

Size: CI by default; `CNI_BRIDGE_SOAK=long` makes the soak and crash tests run for longer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.ipam.host_local.store import (
    LAST_RESERVED_PREFIX,
    LOCK_FILE,
    TEMP_PREFIX,
    decode_owner,
    reservation_ip,
)
from cni_bridge.node.records import kept_until_reboot
from tests.conflist_runner import ConfList, Runtime, RuntimeConf, parse_conflist
from tests.integration.conftest import STATE_ENV
from tests.netns import Netns

LONG = os.environ.get("CNI_BRIDGE_SOAK", "") == "long"
NETWORK = "relnet"
BRIDGE = "br-rel"
BACKENDS = ("nftables", "iptables")
PER_CONTAINER_IPT_CHAIN = re.compile(r"\bCNI-(?:DN-)?[0-9a-f]{21,24}\b")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


def conflist(data_dir: Path, subnet: str, backend: str) -> ConfList:
    """bridge (gateway, masquerade) + host-local on `subnet` + portmap, both on `backend`."""
    return parse_conflist({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": True,
             "ipMasq": True, "ipMasqBackend": backend, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": subnet}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True,
             "backend": backend},
        ],
    })


def port_cap(host_port: int, container_port: int = 80) -> dict[str, Any]:
    return {"portMappings": [{"hostPort": host_port, "containerPort": container_port,
                              "protocol": "tcp"}]}


@dataclass
class World:
    host: Netns
    plugin_dir: Path
    tmp: Path
    subnet: str
    backend: str
    data_dir: Path = field(init=False)
    runtime: Runtime = field(init=False)
    conf: ConfList = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.tmp / "ipam"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.runtime = Runtime([str(self.plugin_dir)], str(self.tmp / "cache"), self.host)
        self.conf = conflist(self.data_dir, self.subnet, self.backend)

    # --- verbs -----------------------------------------------------------------------------

    def rt(self, cid: str, ns: Netns | str | None, host_port: int | None = None) -> RuntimeConf:
        path = ns.path if isinstance(ns, Netns) else (ns or "")
        cap = port_cap(host_port) if host_port is not None else {}
        return RuntimeConf(container_id=cid, netns=path, capability_args=cap)

    def add(self, rt: RuntimeConf) -> dict[str, Any]:
        return self.runtime.add(self.conf, rt)

    def check(self, rt: RuntimeConf) -> None:
        self.runtime.check(self.conf, rt)

    def delete(self, rt: RuntimeConf) -> None:
        self.runtime.delete(self.conf, rt)

    # --- readers ---------------------------------------------------------------------------

    def store_dir(self) -> Path:
        return self.data_dir / NETWORK

    def store_problems(self) -> list[str]:
        """What would make the host-local store unparseable: empty/partial reservation files,
        unreadable cursors, unknown files. Temporaries are listed separately (see `temporaries`)."""
        problems = []
        directory = self.store_dir()
        for f in sorted(directory.iterdir()) if directory.is_dir() else []:
            name = f.name
            if name == LOCK_FILE or name.startswith(TEMP_PREFIX):
                continue
            try:
                data = f.read_bytes()
            except FileNotFoundError:  # released between listing and reading
                continue
            if name.startswith(LAST_RESERVED_PREFIX):
                try:
                    ipaddress.ip_address(data.decode().strip())
                except ValueError:
                    problems.append(f"cursor {name} holds {data!r}")
                continue
            if reservation_ip(name) is None:
                problems.append(f"unknown file {name}")
                continue
            owner = decode_owner(data)
            if not owner.container_id or owner.ifname is None:
                problems.append(f"reservation {name} holds {data!r}")
        return problems

    def temporaries(self) -> list[str]:
        directory = self.store_dir()
        return sorted(f.name for f in directory.iterdir()
                      if f.name.startswith(TEMP_PREFIX)) if directory.is_dir() else []

    def reservations(self) -> dict[str, str]:
        """{ip: "cid/ifname"} of the reservation files."""
        directory = self.store_dir()
        out = {}
        for f in directory.iterdir() if directory.is_dir() else []:
            if reservation_ip(f.name) is not None:
                try:
                    owner = decode_owner(f.read_bytes())
                except FileNotFoundError:  # released between listing and reading
                    continue
                out[f.name] = f"{owner.container_id}/{owner.ifname}"
        return out

    def host_veths(self) -> list[str]:
        links = self.host.ip_json("link", "show", "type", "veth")
        return sorted(li["ifname"] for li in links if re.fullmatch(r"veth[0-9a-f]{8}",
                                                                   li["ifname"]))

    def firewall_leaks(self) -> list[str]:
        """Firewall state that belongs to a container: elements in our nft maps/sets, any rule
        naming an address of the container range, per-container iptables chains."""
        leaks: list[str] = []
        net = ipaddress.ip_network(self.subnet)
        containers = {str(ip) for ip in net.hosts()} - {str(next(net.hosts()))}  # not the gw
        ruleset = self.host.run("nft", "list", "ruleset").stdout
        ipt = self.host.run("iptables-save").stdout
        for source, text in (("nft", ruleset), ("iptables-save", ipt)):
            for line in text.splitlines():
                if set(IPV4.findall(line)) & containers:
                    leaks.append(f"{source}: {line.strip()}")
                if PER_CONTAINER_IPT_CHAIN.search(line):
                    leaks.append(f"{source}: {line.strip()}")
        listing = self.host.run("nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
        if listing.returncode == 0:
            for item in json.loads(listing.stdout)["nftables"]:
                for kind in ("map", "set"):
                    if kind in item and item[kind].get("elem"):
                        leaks.append(f"nft {kind} {item[kind]['name']}: {item[kind]['elem']}")
        return sorted(set(leaks))

    def records(self) -> list[str]:
        """Every file in this host's record directory (records and leftover temporaries), but
        its owner file and the markers that remember a usable firewall backend until reboot."""
        root = Path(os.environ[STATE_ENV]) / f"netns-{os.stat(self.host.path).st_ino}"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and not kept_until_reboot(p.name))

    def leftovers(self) -> dict[str, list[str]]:
        """Everything an attachment can leave; all lists empty means nothing left."""
        return {"store": self.store_problems(), "temporaries": self.temporaries(),
                "reservations": sorted(self.reservations()), "veths": self.host_veths(),
                "firewall": self.firewall_leaks(), "records": self.records(),
                "cache": sorted(p.name for p in (self.tmp / "cache").rglob("*") if p.is_file())}

    def assert_clean(self, when: str) -> None:
        left = {k: v for k, v in self.leftovers().items() if v}
        assert not left, f"{when}: left behind {left}"


@pytest.fixture
def make_world(host_ns: Netns, plugin_dir: Path,
               tmp_path: Path) -> Callable[..., World]:
    """`make_world(backend, subnet=..., host=H)`: a World in H (or another host namespace)."""
    counter = iter(range(1000))

    def make(backend: str, subnet: str = "10.99.0.0/28", host: Netns | None = None) -> World:
        return World(host or host_ns, plugin_dir, tmp_path / f"world{next(counter)}", subnet,
                     backend)

    return make


def test_world_readers_on_a_fresh_host(make_world: Callable[..., World]) -> None:
    world = make_world("nftables")
    world.assert_clean("fresh host")
    assert world.store_problems() == []
