"""Helpers shared by the bridge plugin integration tests (plus checks of the helpers themselves).

`Bench` is one test's world: the "H" namespace the plugin runs in, a factory for container
namespaces, a temporary host-local `dataDir`, and readers for the state the tests assert on
(links, reservations, masquerade entries in both backends). Nothing here touches the machine's
own namespace: every command goes through `Netns.run`.

Baseline ("H is back where it started") is defined by `snapshot`/`assert_back_to_baseline`.
What a DEL deliberately leaves behind, as the reference does:
- the bridge itself, its gateway addresses and the kernel's connected routes for them;
- `ip_forward` / IPv6 `forwarding` stay 1;
- the nftables backend's table `inet cni_bridge` with its base chain and *empty* maps (a
  constant skeleton shared by all containers), and the network's per-subnet chain
  (`masq_net4_<subnet>`: one rule, shared by the subnet's containers like the bridge and its
  gateway address; DEL keeps it, GC removes it once unused);
- for the iptables backend, built-in nat chains that iptables creates on first use (no rules).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO_ROOT, RunPlugin
from tests.netns import Netns, PluginRun

NETWORK = "bnet"
BRIDGE = "br-test"
SUBNET4, GW4 = "10.77.0.0/24", "10.77.0.1"
SUBNET6, GW6 = "fd00:77::/64", "fd00:77::1"
ECHO_PORT = 7000
# Set to a file path to get the plugin's per-call JSON log (durations per phase) from every call.
CALL_LOG = os.environ.get("CNI_BRIDGE_TEST_CALL_LOG", "")

# ICMP echo from inside a namespace (no ping binary on these machines): prints "ok <ip>" or
# "fail <ip>" for each target, within one process so several targets cost one start-up.
PING = r"""
import os, select, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ping(ip, timeout):
    v6 = ":" in ip
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                      socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    kind, reply = (128, 129) if v6 else (8, 0)
    end = time.monotonic() + timeout
    seq = 0
    while time.monotonic() < end:
        seq += 1
        hdr = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"cni-bridge"
        if not v6: hdr = hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]
        s.sendto(hdr, (ip, 0))
        step = time.monotonic() + 0.3
        while time.monotonic() < min(step, end):
            r, _, _ = select.select([s], [], [], max(0.0, min(step, end) - time.monotonic()))
            if not r: break
            data, src = s.recvfrom(2048)
            icmp = data if v6 else data[(data[0] & 0xf) * 4:]
            if src[0].split("%")[0] == ip and icmp[0] == reply and \
                    struct.unpack("!H", icmp[4:6])[0] == ident:
                return True
    return False
timeout = float(sys.argv[1])
for ip in sys.argv[2:]:
    print(("ok " if ping(ip, timeout) else "fail ") + ip, flush=True)
"""


def ping(ns: Netns, *targets: str, timeout: float = 2.0) -> dict[str, bool]:
    """ICMP echo from `ns` to each target: {target: answered}."""
    proc = ns.run(sys.executable, "-c", PING, str(timeout), *targets, check=False,
                  timeout=timeout * len(targets) + 10)
    seen = dict(line.split(" ", 1)[::-1] for line in proc.stdout.split("\n") if line)
    return {t: seen.get(t) == "ok" for t in targets}


def parallel(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 4) -> list[Any]:
    """`fn` over `items` in threads (each call runs subprocesses), results in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def ipam_v4(data_dir: Path, subnet: str = SUBNET4) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": str(data_dir), "ranges": [[{"subnet": subnet}]]}


def ipam_v6(data_dir: Path) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": str(data_dir), "ranges": [[{"subnet": SUBNET6}]]}


def ipam_dual(data_dir: Path) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": str(data_dir),
            "ranges": [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]]}


FAIL_AT_ENV = "CNI_TEST_FAIL_AT"
FAULT_LAUNCHER = """#!{python}
# Test launcher that makes one function fail: $CNI_TEST_FAIL_AT = "package.module.function".
import importlib, os, sys
sys.path.insert(0, {root!r})
target = os.environ.get("CNI_TEST_FAIL_AT", "")
if target:
    from cni_bridge.cni.errors import CniError
    def fail(*args, **kwargs):
        raise CniError("injected failure at " + target)
    module, _, attr = target.rpartition(".")
    setattr(importlib.import_module(module), attr, fail)
from cni_bridge.entry import main
raise SystemExit(main())
"""


def fault_launcher(base: Path) -> Path:
    """`base/fault/bridge`: the bridge plugin with fault injection (created once)."""
    path = base / "fault" / "bridge"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(FAULT_LAUNCHER.format(python=sys.executable, root=str(REPO_ROOT)))
        tmp.chmod(0o755)
        tmp.rename(path)
    return path


@dataclass
class Bench:
    host: Netns
    make_ns: Callable[[str], Netns]
    runner: RunPlugin
    plugin_dir: Path
    data_dir: Path

    # --- configs and calls -----------------------------------------------------------------

    def config(self, version: str = "1.0.0", ipam: str | None = "v4",
               **fields: Any) -> dict[str, Any]:
        """A bridge config on BRIDGE with the gateway; `ipam` is "v4", "v6", "dual" or None."""
        cfg: dict[str, Any] = {"cniVersion": version, "name": NETWORK, "type": "bridge",
                               "bridge": BRIDGE, "isGateway": True}
        if ipam is not None:
            cfg["ipam"] = {"v4": ipam_v4, "v6": ipam_v6, "dual": ipam_dual}[ipam](self.data_dir)
        cfg.update(fields)
        return {k: v for k, v in cfg.items() if v is not None}

    def call(self, command: str, container: Netns | str | None, config: dict[str, Any], *,
             cid: str = "c1", ifname: str = "eth0", args: str = "",
             prev: dict[str, Any] | None = None, cni_path: str | None = None,
             plugin: str = "bridge", fail_at: str = "") -> PluginRun:
        """Run the bridge; `fail_at` ("module.function") runs it with that function failing."""
        if prev is not None:
            config = {**config, "prevResult": prev}
        env = {"CNI_BRIDGE_LOG": CALL_LOG} if CALL_LOG else {}
        if fail_at:
            plugin = str(fault_launcher(self.data_dir.parent))  # always the source tree
            env[FAIL_AT_ENV] = fail_at
        return self.runner(self.host, plugin, command, config, container_id=cid,
                           netns=container, ifname=ifname, cni_args=args, cni_path=cni_path,
                           env=env)

    def add(self, container: Netns, config: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """ADD that must succeed; returns the result."""
        run = self.call("ADD", container, config, **kw)
        assert run.rc == 0, f"ADD failed: {run.stdout}\n{run.stderr}"
        assert isinstance(run.json, dict)
        return run.json

    def ok(self, command: str, container: Netns | str | None, config: dict[str, Any],
           **kw: Any) -> None:
        run = self.call(command, container, config, **kw)
        assert run.rc == 0, f"{command} failed: {run.stdout}\n{run.stderr}"
        assert run.stdout.strip() == "", f"{command} printed {run.stdout!r}"

    def fails(self, command: str, container: Netns | str | None, config: dict[str, Any],
              **kw: Any) -> dict[str, Any]:
        """A call that must fail; returns the error object (msg and details joined in 'text')."""
        run = self.call(command, container, config, **kw)
        assert run.rc != 0, f"{command} unexpectedly succeeded: {run.stdout}"
        err = dict(run.json)
        err["text"] = f"{err.get('msg', '')}: {err.get('details', '')}"
        return err

    # --- state readers ---------------------------------------------------------------------

    def reservations(self, network: str = NETWORK) -> dict[str, str]:
        """host-local files: {ip: "cid/ifname"} (lock and cursor files left out)."""
        directory = self.data_dir / network
        if not directory.is_dir():
            return {}
        out = {}
        for f in directory.iterdir():
            if f.name == "lock" or f.name.startswith("last_reserved_ip"):
                continue
            out[f.name] = "/".join(f.read_bytes().decode().split("\r\n"))
        return out

    def links(self, ns: Netns | None = None, kind: str | None = None) -> dict[str, Any]:
        """{ifname: `ip -j -d link` entry}, optionally only one kind."""
        found = {}
        for link in (ns or self.host).ip_json("link", "show"):
            if kind is None or link.get("linkinfo", {}).get("info_kind") == kind:
                found[link["ifname"]] = link
        return found

    def host_veths(self) -> list[str]:
        """The plugin's host-side veths (`veth` + 8 hex; the uplink to O is not one)."""
        return sorted(n for n in self.links(kind="veth") if re.fullmatch(r"veth[0-9a-f]{8}", n))

    def addresses(self, ns: Netns, dev: str) -> list[str]:
        entries = ns.ip_json("addr", "show", "dev", dev)
        return [f"{a['local']}/{a['prefixlen']}" for e in entries for a in e["addr_info"]
                if a.get("scope") == "global"]

    def nft_masq_comments(self) -> list[str]:
        """Owner comments of masquerade entries in our table and the reference's."""
        found: list[str] = []
        for table in ("inet cni_bridge", "inet cni_plugins_masquerade"):
            proc = self.host.run("nft", "list", "table", *table.split(), check=False)
            found += re.findall(r'comment "([^"]*, id: [^"]*)"', proc.stdout)
        return found

    def drop_nft_masq_source(self, ip: str, cid: str) -> str:
        """Delete the element keyed by the bare address `ip` of owner `cid` from whichever map
        of our table holds it (as a drifted host would); returns the map's name."""
        text = self.host.run("nft", "list", "table", "inet", "cni_bridge").stdout
        for block in re.finditer(r"\bmap (\S+) \{(.*?)\n\t\}", text, re.S):
            if re.search(rf'[{{,\s]{re.escape(ip)} comment "[^"]*id: {cid}"', block.group(2)):
                self.host.run("nft", "delete", "element", "inet", "cni_bridge", block.group(1),
                              f"{{ {ip} }}")
                return block.group(1)
        raise AssertionError(f"no masquerade element for {ip} of {cid}:\n{text}")

    def ipt_nat(self, version: int = 4) -> list[str]:
        """Rules and non-built-in chains of the nat table (counters dropped)."""
        tool = "iptables-save" if version == 4 else "ip6tables-save"
        lines = self.host.run(tool, "-t", "nat").stdout.splitlines()
        builtin = (":PREROUTING", ":INPUT", ":OUTPUT", ":POSTROUTING")
        return [re.sub(r"\[\d+:\d+\]", "", ln).strip() for ln in lines
                if ln.startswith("-A ") or (ln.startswith(":") and not ln.startswith(builtin))]

    def masq_state(self) -> list[str]:
        """Every masquerade trace in both backends (empty: nothing left)."""
        return self.nft_masq_comments() + self.ipt_nat(4) + self.ipt_nat(6)

    def owner_traces(self, cid: str) -> list[str]:
        """Masquerade state that mentions container `cid` (both backends)."""
        return [s for s in self.masq_state()
                if f'id: {cid}' in s or f'id: \\"{cid}\\"' in s or f'id: "{cid}"' in s]


@pytest.fixture
def bench(host_ns: Netns, netns: Callable[[str], Netns], run_plugin: RunPlugin,
          plugin_dir: Path, tmp_path: Path) -> Bench:
    data_dir = tmp_path / "ipam"
    data_dir.mkdir()
    return Bench(host_ns, netns, run_plugin, plugin_dir, data_dir)



# --- baseline ------------------------------------------------------------------------------------


def snapshot(ns: Netns) -> dict[str, Any]:
    """Links, addresses, routes and firewall state of `ns`, normalised for comparison."""
    links = sorted((li["ifname"], li.get("linkinfo", {}).get("info_kind", ""))
                   for li in ns.ip_json("link", "show"))
    # IPv6 link-local addresses (and their routes) appear asynchronously: left out.
    addrs = sorted((e["ifname"], f"{a['local']}/{a['prefixlen']}")
                   for e in ns.ip_json("addr", "show") for a in e["addr_info"]
                   if not a["local"].startswith("fe80:"))
    routes = sorted(json.dumps(r, sort_keys=True) for fam in ("-4", "-6")
                    for r in ns.ip_json(fam, "route", "show", "table", "all")
                    if not r.get("dst", "").startswith("fe80:"))
    tables = sorted(ln for ln in ns.run("nft", "list", "tables").stdout.splitlines())
    ipt = {}
    for tool in ("iptables-save", "ip6tables-save"):
        lines = ns.run(tool).stdout.splitlines()
        ipt[tool] = [re.sub(r"\[\d+:\d+\]", "", ln).strip() for ln in lines
                     if ln.startswith("-A ") or (ln.startswith(":") and "CNI" in ln)]
    return {"links": links, "addrs": addrs, "routes": routes, "tables": tables, **ipt}


def assert_back_to_baseline(ns: Netns, before: dict[str, Any], bridge: str = BRIDGE) -> None:
    """`ns` equals `before` except for the documented leftovers (module docstring)."""
    after = snapshot(ns)
    assert [li for li in after["links"] if li[0] != bridge] == before["links"]
    assert [a for a in after["addrs"] if a[0] != bridge] == before["addrs"]
    routes = [r for r in after["routes"] if json.loads(r).get("dev") != bridge]
    assert routes == before["routes"]
    assert after["iptables-save"] == before["iptables-save"]
    assert after["ip6tables-save"] == before["ip6tables-save"]
    extra_tables = set(after["tables"]) - set(before["tables"])
    assert extra_tables <= {"table inet cni_bridge"}, extra_tables
    if extra_tables:
        listing = ns.run("nft", "-j", "list", "table", "inet", "cni_bridge").stdout
        items = json.loads(listing)["nftables"]
        shared = ("masq_postrouting", "masq_net4_", "masq_net6_")
        assert not [i for i in items if "rule" in i and not i["rule"]["chain"].startswith(shared)]
        maps = [i["map"] for i in items if "map" in i] + [i["set"] for i in items if "set" in i]
        assert all(not m.get("elem") for m in maps), f"elements left: {maps}"


def test_bench_readers_on_a_fresh_namespace(bench: Bench) -> None:
    assert bench.host_veths() == []
    assert bench.reservations() == {}
    assert bench.masq_state() == []
    c = bench.make_ns("C")
    assert ping(c, "127.0.0.1", "10.255.255.1", timeout=0.5) == {"127.0.0.1": True,
                                                                   "10.255.255.1": False}




def first_ip(result: dict[str, Any], version: int = 4) -> str:
    for ip in result["ips"]:
        addr = ip["address"].split("/")[0]
        if (":" in addr) == (version == 6):
            return str(addr)
    raise AssertionError(f"no IPv{version} address in {result}")
