"""``cni-bridge demo``: the default network acted out in throwaway namespaces, proved with bytes.
Exit status 0 only when every proof passed; every namespace and temp dir goes on any exit.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cni_bridge.admin.demo_world import H_UPLINK, O_ADDRESS, World, WorldError
from cni_bridge.admin.runtime import Attachment, PluginError, Runtime
from cni_bridge.deploy.confdir import ConflistError, parse_network_list
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.deploy.install import default_plugin_dir
from cni_bridge.ipam.host_local.index import INDEX_DIR
from cni_bridge.ipam.host_local.store import reservation_ip
from cni_bridge.node import records

HOST_PORT, CONTAINER_PORT = 8080, 80
NFT_TABLE = ("inet", "cni_bridge")


def say(text: str = "", indent: int = 0) -> None:
    for line in text.splitlines() or [""]:
        print(" " * indent + line, flush=True)


@dataclass(frozen=True)
class Exchange:
    """The server in `server` must see `expected` (explained by `meaning`) as the peer."""

    what: str
    client: str
    server: str
    port: int
    to: str
    to_port: int
    expected: str
    meaning: str

    def run(self, world: World) -> tuple[bool, str, str]:
        """(passed, what, detail)."""
        server = world.serve(self.server, self.port)
        ok, output = world.probe(self.client, self.to, self.to_port)
        peer = server.peer(timeout=3.0 if ok else 0.2)
        server.stop()
        if not ok:
            return False, self.what, f"no answer from {self.to}:{self.to_port}: {output}"
        if peer != self.expected:
            return False, self.what, (f"{self.server} saw {peer}, expected {self.expected} "
                                      f"({self.meaning})")
        return True, self.what, f"{self.server} saw {peer} ({self.meaning})"


@dataclass
class Demo:
    world: World
    workdir: Path
    plugin_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    proofs: int = 0

    def __post_init__(self) -> None:
        conf = copy.deepcopy(DEFAULT_CONFLIST)
        conf["plugins"][0]["ipam"]["dataDir"] = str(self.workdir / "ipam")
        self.net = parse_network_list(conf)
        self.runtime = Runtime(
            [self.plugin_dir], self.workdir / "cache", netns=self.world.name("H"),
            env={"CNI_BRIDGE_STATE_DIR": str(self.workdir / "state")},
        )

    def attachment(self, role: str) -> Attachment:
        """What a runtime passes for the container, on ADD and DEL alike."""
        mapping = {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}
        caps = {"portMappings": [mapping]} if role == "C1" else {}
        return Attachment(f"demo-{role.lower()}", "eth0", self.world.path(role),
                          capability_args=caps)

    def proof(self, ok: bool, what: str, detail: str) -> None:
        self.proofs += 1
        say(f"[{'ok' if ok else 'FAIL'}] {what}", 3)
        say(detail, 8)
        if not ok:
            self.failures.append(what)

    def build_world(self) -> None:
        self.world.create()
        w = self.world
        say("1. The world (network namespaces made for this demo)")
        say(f"H   {w.name('H'):<24} stands for the node: the plugins run here", 3)
        say(f"C1  {w.name('C1'):<24} a container", 3)
        say(f"C2  {w.name('C2'):<24} a container", 3)
        say(f"O   {w.name('O'):<24} the outside, linked to H: H is {H_UPLINK}, O is "
            f"{O_ADDRESS}", 3)
        say()

    def add(self) -> None:
        bridge, ipam = DEFAULT_CONFLIST["plugins"][0], DEFAULT_CONFLIST["plugins"][0]["ipam"]
        subnet = ipam["ranges"][0][0]["subnet"]
        say(f"2. ADD through the runtime, network '{self.net.name}' (conf/10-cni-bridge.conflist):"
            f" bridge {bridge['bridge']},")
        say(f"addresses from {subnet} (host-local), masquerade, port mappings (portmap)", 3)
        for role in ("C1", "C2"):
            started = time.monotonic()
            att = self.attachment(role)
            result = self.runtime.add(self.net, att)
            self.results[role] = result
            ip = result["ips"][0]
            veth = next((i["name"] for i in result.get("interfaces", [])
                         if not i.get("sandbox") and i["name"] != bridge["bridge"]), "?")
            extra = f", publishes {HOST_PORT}->{CONTAINER_PORT}/tcp" if att.capability_args \
                else ""
            say(f"ADD {role}{extra}: {time.monotonic() - started:.2f} s", 3)
            say(f"eth0 {ip['address']}, gateway {ip.get('gateway', '-')}; host side {veth} on "
                f"{bridge['bridge']}", 8)
        say()

    def show(self) -> None:
        w = self.world
        say("3. What ADD built")
        say("routes in C1:", 3)
        say("\n".join(line.strip() for line in w.ip("C1", "route").splitlines()), 6)
        say("the bridge in H:", 3)
        say(bridge_summary(w, "br0"), 6)
        title, lines = firewall_summary(w)
        say(f"the firewall in H: {title}", 3)
        say("\n".join(lines) or "(empty)", 6)
        say()

    def prove(self) -> None:
        w = self.world
        c1 = self.results["C1"]["ips"][0]["address"].split("/")[0]
        c2 = self.results["C2"]["ips"][0]["address"].split("/")[0]
        gateway = self.results["C1"]["ips"][0].get("gateway", "")
        say("4. Proof, by moving bytes (a tiny echo server and client in the namespaces)")
        cases = [
            Exchange("C1 -> C2", "C1", "C2", 7000, c2, 7000, c1,
                     "C1's own address: same bridge"),
            Exchange("H -> C1", "H", "C1", CONTAINER_PORT, c1, CONTAINER_PORT, gateway,
                     "the bridge's address"),
            Exchange("C1 -> O (outbound)", "C1", "O", 9000, O_ADDRESS, 9000, H_UPLINK,
                     "H's address: masqueraded"),
            Exchange(f"O -> H:{HOST_PORT} (published port) reaches C1:{CONTAINER_PORT}", "O",
                     "C1", CONTAINER_PORT, H_UPLINK, HOST_PORT, O_ADDRESS,
                     "O's own address: not NATed"),
        ]
        for case in cases:
            self.proof(*case.run(w))
        say()

    def delete(self) -> None:
        w = self.world
        say("5. DEL both containers, then look for leftovers")
        for role in ("C1", "C2"):
            started = time.monotonic()
            self.runtime.delete(self.net, self.attachment(role))
            say(f"DEL {role}: {time.monotonic() - started:.2f} s", 3)
        veths = [ln.split()[0].split("@")[0] for ln in
                 w.ip("H", "-br", "link", "show", "type", "veth").splitlines()]
        veths = [v for v in veths if v != "uplink"]
        self.proof(not veths, "no veth left in H", ", ".join(veths) or "only H's uplink")
        store = self.workdir / "ipam" / self.net.name
        files = sorted(p.name for p in store.iterdir()) if store.is_dir() else []
        held = [name for name in files if reservation_ip(name) is not None]
        self.proof(not held, "no address reserved", ", ".join(held) or
                   f"the store holds only: {', '.join(files) or 'nothing'}")
        entries = firewall_entries(w)
        self.proof(not entries, "no firewall entry left",
                   "\n".join(entries) or "no element in any set or map")
        # Kept by design: the namespace's owner file, backend probe markers, and host-local's
        # index of the (now empty) store.
        leftovers = [str(p.relative_to(self.workdir)) for sub in ("state", "cache")
                     for p in (self.workdir / sub).rglob("*")
                     if p.is_file() and not records.kept_until_reboot(p.name)
                     and p.parent.name != INDEX_DIR]
        self.proof(not leftovers, "no record and no cached result left",
                   ", ".join(leftovers) or "state and cache directories are empty")
        say()


def bridge_summary(world: World, bridge: str) -> str:
    addrs = json.loads(world.ip("H", "-j", "addr", "show", bridge))
    inet = [f"{a['local']}/{a['prefixlen']}" for link in addrs for a in link.get("addr_info", [])
            if a.get("scope") == "global"]
    ports = json.loads(world.ip("H", "-j", "-d", "link", "show", "master", bridge))
    described = [p["ifname"] + (" (hairpin)" if p.get("linkinfo", {}).get("info_slave_data", {})
                                .get("hairpin") else "") for p in ports]
    return f"{bridge} {', '.join(inet)}; ports: {', '.join(described) or 'none'}"


def firewall_summary(world: World) -> tuple[str, list[str]]:
    """The entries of our nft table, one line per map (the fixed chains only named)."""
    if shutil.which("nft"):
        proc = world.exec("H", "nft", "list", "table", *NFT_TABLE, check=False)
        if proc.returncode == 0:
            maps, chains = summarize_nft(proc.stdout)
            width = max((len(name) for name in maps), default=0)
            lines = [f"{name:<{width}}  {', '.join(elems)}" for name, elems in maps.items()]
            lines.append(f"+ {len(chains)} chains of fixed rules that look these maps up")
            return "table inet cni_bridge (nftables), elements by map:", lines
    proc = world.exec("H", "iptables-save", "-t", "nat", check=False)
    return "iptables nat table (CNI lines):", [ln for ln in proc.stdout.splitlines()
                                              if "CNI" in ln]


def summarize_nft(listing: str) -> tuple[dict[str, list[str]], list[str]]:
    """From `nft list table` text: {map or set name: its elements} (non-empty ones), chains.
    Owner comments and mark values are left out: they are for the plugins, not for reading."""
    text = re.sub(r'\s+comment "[^"]*"', "", listing)
    text = re.sub(r"\s*:\s*0x[0-9a-f]+", "", text)
    maps: dict[str, list[str]] = {}
    for match in re.finditer(r"(?:map|set) (\S+) \{[^{}]*?elements = \{([^}]*)\}", text):
        maps[match.group(1)] = [" ".join(e.split()) for e in match.group(2).split(",")]
    return maps, re.findall(r"chain (\S+) \{", text)


def firewall_entries(world: World) -> list[str]:
    """Elements left in our nft table (or CNI chains in iptables)."""
    found = []
    if shutil.which("nft"):
        proc = world.exec("H", "nft", "-j", "list", "table", *NFT_TABLE, check=False)
        if proc.returncode == 0:
            for item in json.loads(proc.stdout).get("nftables", []):
                for kind in ("set", "map"):
                    obj = item.get(kind)
                    if obj and obj.get("elem"):
                        found.append(f"{kind} {obj['name']}: {len(obj['elem'])} element(s)")
    proc = world.exec("H", "iptables-save", "-t", "nat", check=False)
    found += [ln for ln in proc.stdout.splitlines() if "demo-c" in ln]
    return found


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def signals_handled(handler: Any) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP: interrupt the demo into its cleanup (even where SIGINT was
    ignored), or (SIG_IGN) not interrupt the cleanup itself."""
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "the demo creates network namespaces: run it as root (sudo cni-bridge demo)"
    if shutil.which("ip") is None:
        return "the demo needs the 'ip' command: install iproute2"
    return None


def main(plugin_dir: Path | None = None) -> int:
    problem = preflight()
    if problem:
        print(f"cni-bridge demo: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    say("cni-bridge demo: a container network acted out in throwaway network namespaces.")
    say("This machine's own network is not touched; everything is removed at the end.")
    say()
    workdir = Path(tempfile.mkdtemp(prefix="cnidemo-"))
    demo = Demo(World(), workdir, plugin_dir or default_plugin_dir())
    status = 1
    try:
        with signals_handled(interrupt):
            demo.build_world()
            demo.add()
            demo.show()
            demo.prove()
            demo.delete()
            status = 0 if not demo.failures else 1
    except KeyboardInterrupt:
        print("\ncni-bridge demo: interrupted; cleaning up", file=sys.stderr)
        status = 130
    except (PluginError, ConflistError, WorldError, OSError) as exc:
        print(f"\ncni-bridge demo: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        if isinstance(exc, PluginError) and exc.stderr.strip():
            print(f"  plugin stderr: {exc.stderr.strip()}", file=sys.stderr)
    finally:
        with signals_handled(signal.SIG_IGN):
            left = demo.world.destroy()
            shutil.rmtree(workdir, ignore_errors=True)
    if left:
        print("cni-bridge demo: could not remove " + "; ".join(left), file=sys.stderr)
        status = status or 1
    elapsed = time.monotonic() - started
    if status == 0:
        say(f"All {demo.proofs} checks passed in {elapsed:.1f} s. The namespaces are gone.")
    elif status == 1:
        failed = ", ".join(demo.failures) or "the demo stopped early"
        say(f"FAILED ({failed}) after {elapsed:.1f} s. The namespaces are gone.")
    return status

