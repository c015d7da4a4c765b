"""The world the portmap integration tests share, built once per module and backend.

Topology (every address lives only in namespaces made here):

    O  eth0 198.51.100.2/24, 2001:db8:ff::2/64 --- H uplink 198.51.100.1/24, 2001:db8:ff::1/64
    O2 eth0 203.0.113.2/24                    --- H uplink2 203.0.113.1/24
    H  "extra" 192.0.2.1/32 (a second host address for hostIP mappings; a veth, as this
       kernel has no dummy module)
    H  bridge pmbr0 (made by the bridge plugin) 10.66.0.1/24, fd00:66::1/64 --- containers

O reaches 203.0.113.0/24 and 192.0.2.1 through H (transit and hostIP tests); O2 reaches O
through H. O2 has no loopback addresses and routes 127.0.0.1 to H: it plays the neighbour that
tries to reach a port published on 127.0.0.1. Plugins run only in H, through the conflist runner
(bridge + host-local + portmap with the ``portMappings`` capability); host-local's dataDir and
the runtime cache are in a temp directory.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conflist_runner import ConfList, Runtime, RuntimeConf, parse_conflist
from tests.integration.conftest import H_UPLINK_V4, H_UPLINK_V6, O_ETH0_V4, O_ETH0_V6
from tests.netns import Netns, create_netns, delete_netns, echo_server, probe, veth_between

O2_V4, H_UPLINK2_V4 = "203.0.113.2", "203.0.113.1"
H_EXTRA_V4 = "192.0.2.1"
BRIDGE = "pmbr0"
SUBNET_V4, SUBNET_V6 = "10.66.0.0/24", "fd00:66::/64"
GATEWAY_V4, GATEWAY_V6 = "10.66.0.1", "fd00:66::1"
BACKENDS = ("default", "iptables")  # "default": no backend key (nftables on these machines)
REFERENCE_DIR = Path("/usr/lib/cni")

__all__ = ["H_UPLINK_V4", "H_UPLINK_V6", "O_ETH0_V4", "O_ETH0_V6"]


@dataclass
class Container:
    ns: Netns
    rt: RuntimeConf
    result: dict[str, Any]
    conflist: ConfList
    runtime: Runtime

    @property
    def cid(self) -> str:
        return self.rt.container_id

    def addresses(self) -> list[str]:
        return [str(entry["address"].split("/")[0]) for entry in self.result.get("ips", [])]

    def ip(self, version: int = 4) -> str:
        for entry in self.result.get("ips", []):
            address = entry["address"].split("/")[0]
            if (":" in address) == (version == 6):
                return str(address)
        raise AssertionError(f"container {self.cid} has no IPv{version} address")


@dataclass
class World:
    backend: str
    host: Netns
    outside: Netns
    outside2: Netns
    tmp: Path
    plugin_dir: Path
    runtime: Runtime
    conflist: ConfList
    made: list[Netns] = field(default_factory=list)
    alive: list[Container] = field(default_factory=list)

    def conflist_doc(self, *, name: str | None = None, version: str = "1.1.0",
                     portmap: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return network_doc(self.backend, self.tmp, name=name, version=version, portmap=portmap)

    def add(self, cid: str, mappings: Sequence[Mapping[str, Any]] | None,
            conflist: ConfList | None = None, runtime: Runtime | None = None) -> Container:
        """A new container namespace attached with `mappings` (None: no portMappings at all)."""
        ns = self.netns(cid)
        caps: dict[str, Any] = {} if mappings is None else {"portMappings": list(mappings)}
        rt = RuntimeConf(cid, ns.path, "eth0", "", caps)
        runtime = runtime or self.runtime
        conflist = conflist or self.conflist
        result = runtime.add(conflist, rt)
        container = Container(ns, rt, result, conflist, runtime)
        self.alive.append(container)
        return container

    def delete(self, container: Container) -> None:
        container.runtime.delete(container.conflist, container.rt)
        self.alive.remove(container)
        self.forget(container.ns)

    def netns(self, role: str) -> Netns:
        ns = create_netns(role)
        self.made.append(ns)
        return ns

    def forget(self, ns: Netns) -> None:
        delete_netns(ns)
        if ns in self.made:
            self.made.remove(ns)

    def firewall_text(self) -> str:
        """Everything both backends hold in H: nft ruleset and both nat tables."""
        parts = [self.host.run("nft", "list", "ruleset").stdout]
        for tool in ("iptables-save", "ip6tables-save"):
            parts.append(self.host.run(tool).stdout)
        return "\n".join(parts)

    def firewall_snapshot(self) -> str:
        """firewall_text without packet counters and iptables-save's dated comments."""
        text = re.sub(r"\[\d+:\d+\]", "", self.firewall_text())
        text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
        return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


def network_doc(backend: str, tmp: Path, *, name: str | None = None, version: str = "1.1.0",
                portmap: Mapping[str, Any] | None = None) -> dict[str, Any]:
    bridge: dict[str, Any] = {
        "type": "bridge", "bridge": BRIDGE, "isDefaultGateway": True, "ipMasq": True,
        "hairpinMode": True,
        "ipam": {"type": "host-local", "dataDir": str(tmp / "ipam"),
                 "ranges": [[{"subnet": SUBNET_V4}], [{"subnet": SUBNET_V6}]]},
    }
    pm: dict[str, Any] = {"type": "portmap", "capabilities": {"portMappings": True}}
    if backend == "iptables":
        bridge["ipMasqBackend"] = "iptables"
        pm["backend"] = "iptables"
    pm.update(portmap or {})
    return {"cniVersion": version, "name": name or f"pm{backend}", "plugins": [bridge, pm]}


def _topology(host: Netns, outside: Netns, outside2: Netns) -> None:
    veth_between(host, "uplink", outside, "eth0")
    veth_between(host, "uplink2", outside2, "eth0")
    host.run("ip", "addr", "add", f"{H_UPLINK_V4}/24", "dev", "uplink")
    host.run("ip", "addr", "add", f"{H_UPLINK_V6}/64", "dev", "uplink", "nodad")
    host.run("ip", "addr", "add", f"{H_UPLINK2_V4}/24", "dev", "uplink2")
    # No dummy module here: a veth pair inside H carries the second host address.
    host.run("ip", "link", "add", "extra", "type", "veth", "peer", "name", "extrap")
    host.run("ip", "addr", "add", f"{H_EXTRA_V4}/32", "dev", "extra")
    host.run("ip", "link", "set", "extra", "up")
    host.run("ip", "link", "set", "extrap", "up")
    host.run("ip", "route", "add", "default", "via", O_ETH0_V4)
    host.run("ip", "-6", "route", "add", "default", "via", O_ETH0_V6)
    host.write_sysctl("net.ipv4.ip_forward", "1")
    host.write_sysctl("net.ipv6.conf.all.forwarding", "1")
    outside.run("ip", "addr", "add", f"{O_ETH0_V4}/24", "dev", "eth0")
    outside.run("ip", "addr", "add", f"{O_ETH0_V6}/64", "dev", "eth0", "nodad")
    outside.run("ip", "route", "add", "203.0.113.0/24", "via", H_UPLINK_V4)
    outside.run("ip", "route", "add", f"{H_EXTRA_V4}/32", "via", H_UPLINK_V4)
    outside2.run("ip", "addr", "add", f"{O2_V4}/24", "dev", "eth0")
    outside2.run("ip", "route", "add", "198.51.100.0/24", "via", H_UPLINK2_V4)
    # The neighbour: no loopback addresses of its own, 127.0.0.1 routed to H.
    outside2.run("ip", "addr", "flush", "dev", "lo")
    outside2.run("ip", "route", "add", "127.0.0.1/32", "via", H_UPLINK2_V4)


@contextlib.contextmanager
def build_world(backend: str, plugin_dir: Path, tmp: Path) -> Iterator[World]:
    """The topology above; on exit every container is DELeted and every namespace removed."""
    made: list[Netns] = []
    try:
        for role in ("H", "O", "O2"):
            made.append(create_netns(role))
        host, outside, outside2 = made
        _topology(host, outside, outside2)
        runtime = Runtime([str(plugin_dir)], str(tmp / "cache"), host)
        world = World(backend, host, outside, outside2, tmp, plugin_dir, runtime,
                      parse_conflist(network_doc(backend, tmp)), made)
        try:
            yield world
        finally:
            deleted = []
            for container in list(reversed(world.alive)):
                with contextlib.suppress(Exception):
                    world.delete(container)
                    deleted.append(container)
            # After the DEL of every container, no rule or element names any of them.
            text = world.firewall_text()
            leftovers = [a for c in deleted for a in c.addresses() if mentions(text, a)]
            assert not leftovers, f"still in the firewall after DEL: {leftovers}\n{text}"
    finally:
        for ns in reversed(made):
            delete_netns(ns)


# --- plugin directories mixing ours and the reference's -----------------------------------------


def mixed_plugin_dir(directory: Path, ours: Path, reference: Sequence[str]) -> Path:
    """A CNI_PATH directory: the roles in `reference` from /usr/lib/cni, the others ours."""
    directory.mkdir(parents=True, exist_ok=True)
    for role in ("bridge", "host-local", "portmap"):
        source = REFERENCE_DIR / role if role in reference else ours / role
        link = directory / role
        if not link.exists():
            link.symlink_to(source)
    return directory


def recording_path(directory: Path, tools: Sequence[str]) -> tuple[str, Path]:
    """A PATH whose `tools` log their command line to a file, then run the real tool."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "calls.log"
    for tool in tools:
        script = directory / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n'
                          f'PATH=/usr/sbin:/usr/bin:/sbin:/bin exec {tool} "$@"\n')
        script.chmod(0o755)
    return f"{directory}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", log


FIREWALL_TOOLS = ("nft", "iptables", "iptables-save", "iptables-restore", "ip6tables",
                  "ip6tables-save", "ip6tables-restore", "conntrack", "ip")


# --- a UDP client with a fixed source port (to keep one conntrack entry) --------------------------

UDP_CLIENT = r"""
import socket, sys, time
to, port, sport, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", sport))
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    s.sendto(b"ping\n", (to, port))
    s.settimeout(min(0.2, left))
    try:
        data, peer = s.recvfrom(4096)
    except (TimeoutError, ConnectionRefusedError):
        continue
    print("reply", data.decode(errors="replace").strip())
    sys.exit(0)
sys.exit(1)
"""


def udp_from_port(ns: Netns, to: str, port: int, sport: int, timeout: float) -> bool:
    """Send datagrams from `sport` until one is answered; True when answered within `timeout`."""
    proc = ns.run(sys.executable, "-c", UDP_CLIENT, to, str(port), str(sport), str(timeout),
                  check=False, timeout=timeout + 10)
    return proc.returncode == 0


def mentions(text: str, address: str) -> bool:
    """Whether `address` occurs in `text` as a whole address (10.66.0.2 is not in 10.66.0.21)."""
    edge = r"[0-9A-Fa-f:]" if ":" in address else r"[0-9.]"
    return re.search(rf"(?<!{edge}){re.escape(address)}(?!{edge})", text) is not None


def normalised(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True)


def conntrack_udp(ns: Netns, port: int) -> str:
    proc = ns.run("conntrack", "-L", "-p", "udp", "--orig-port-dst", str(port), check=False)
    return proc.stdout


def nat_rules(ns: Netns, version: int = 4) -> list[str]:
    tool = "iptables-save" if version == 4 else "ip6tables-save"
    return [ln for ln in ns.run(tool, "-t", "nat").stdout.splitlines() if ln.startswith("-A ")]


def test_world_topology(plugin_dir: Path, tmp_path: Path) -> None:
    """O reaches H, O2 reaches O through H, and the neighbour routes 127.0.0.1 to H."""
    with build_world("default", plugin_dir, tmp_path) as w:
        with echo_server(w.host, "tcp", 7001, bind=H_EXTRA_V4):
            assert probe(w.outside, "tcp", H_EXTRA_V4, 7001).ok
        with echo_server(w.outside2, "tcp", 7002) as server:
            assert probe(w.outside, "tcp", O2_V4, 7002).ok
        assert server.peer == O_ETH0_V4
        route = w.outside2.run("ip", "route", "get", "127.0.0.1").stdout
        assert "via 203.0.113.1" in route
    assert not Path(w.host.path).exists()
