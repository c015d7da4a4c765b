"""Helpers for the hostile-input suites: raw calls of the executables and "nothing changed" checks.

`World` runs a plugin executable inside the throwaway "H" namespace under ``env -i``, with stdin
as raw bytes (invalid UTF-8, NUL, 17 MiB), its working directory, data dir and state dir all
inside one temp tree. `World.snapshot()` captures everything a call could change: every file of
that tree (name, type, content hash), H's links, addresses, routes, nft ruleset and iptables
rules, and the plugin's default state locations on the machine (/var/lib/cni/networks,
/run/cni-bridge), which must never be touched by a test call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.strategies import Case, Checked, check_output
from tests.netns import PLUGIN_PATH, PLUGIN_TIMEOUT, Netns

MACHINE_STATE = ("/var/lib/cni/networks", "/run/cni-bridge")
NETWORK = "hostile"


@dataclass(frozen=True)
class Raw:
    rc: int
    stdout: bytes
    stderr: str
    checked: Checked

    @property
    def doc(self) -> Any:
        return self.checked.doc

    @property
    def code(self) -> int | None:
        return self.doc.get("code") if isinstance(self.doc, dict) else None


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, str]
    host: dict[str, str]
    machine: dict[str, tuple[str, ...]]

    def diff(self, other: Snapshot) -> list[str]:
        out = []
        for name in sorted(set(self.files) | set(other.files)):
            if self.files.get(name) != other.files.get(name):
                out.append(f"file {name}: {self.files.get(name)} -> {other.files.get(name)}")
        for key in sorted(self.host):
            if self.host[key] != other.host.get(key):
                out.append(f"H {key} changed:\n--- before\n{self.host[key]}\n--- after\n"
                           f"{other.host.get(key)}")
        for key in sorted(self.machine):
            if self.machine[key] != other.machine.get(key):
                out.append(f"machine state {key} changed: {self.machine[key]} -> "
                           f"{other.machine.get(key)}")
        return out


def _tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"symlink -> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                out[rel] = "file " + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            else:
                out[rel] = "other"
    return out


_COUNTERS = re.compile(r"\[\d+:\d+\]")
# Carrier and DAD state change on their own after an earlier call (a bridge loses its carrier
# a moment after its last port goes): not something a refused call did.
_CARRIER_FLAGS = {"LOWER_UP", "NO-CARRIER"}
_SETTLING = re.compile(r" (linkdown|tentative|dadfailed)\b")


def _settling(text: str) -> str:
    # The local route of a link-local address appears when its DAD ends, on its own time.
    lines = [ln for ln in text.splitlines() if not ln.startswith("local fe80:")]
    return _SETTLING.sub("", "\n".join(lines))


def host_state(ns: Netns) -> dict[str, str]:
    """H's network state, without counters and other fields that change on their own."""
    state: dict[str, str] = {}
    links = ns.ip_json("link", "show")
    state["links"] = json.dumps(sorted(
        (link["ifname"], link.get("link_type"), link.get("address"), link.get("mtu"),
         link.get("master"), link.get("linkinfo", {}).get("info_kind"),
         sorted(f for f in link.get("flags", []) if f not in _CARRIER_FLAGS))
        for link in links))
    state["addresses"] = _settling(ns.run("ip", "-o", "addr", "show").stdout)
    state["routes4"] = _settling(ns.run("ip", "route", "show", "table", "all").stdout)
    state["routes6"] = _settling(ns.run("ip", "-6", "route", "show", "table", "all").stdout)
    if shutil.which("nft"):
        state["nft"] = ns.run("nft", "list", "ruleset", check=False).stdout
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = ns.run(tool, check=False).stdout
            state[tool] = "\n".join(_COUNTERS.sub("", line) for line in out.splitlines()
                                    if not line.startswith("#"))
    state["forwarding"] = ns.sysctl("net.ipv4.ip_forward")
    return state


def machine_state(ns: Netns) -> dict[str, tuple[str, ...]]:
    """The machine's default state locations as far as calls made in `ns` could touch them.

    /var/lib/cni/networks whole; /run/cni-bridge only for `ns` (records are kept per namespace
    inode, so other test runs do not disturb the comparison).
    """
    out = {}
    ino = os.stat(ns.path).st_ino
    for path in (MACHINE_STATE[0], f"{MACHINE_STATE[1]}/netns-{ino}"):
        p = Path(path)
        out[path] = tuple(sorted(str(x) for x in p.rglob("*"))) if p.is_dir() else ()
    return out


@dataclass
class World:
    """A temp tree (`root`) and H; every call's files must stay inside `root`."""

    ns: Netns
    root: Path
    plugin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    def env(self, command: str | None, **overrides: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "CNI_COMMAND": command, "CNI_CONTAINERID": "c1",
            "CNI_NETNS": "/run/netns/cnit-hostile-does-not-exist", "CNI_IFNAME": "eth0",
            "CNI_ARGS": "", "CNI_PATH": str(self.plugin_dir),
        }
        env.update(overrides)
        return env

    def conf(self, role: str = "bridge", **fields: Any) -> dict[str, Any]:
        """A valid L3 bridge (or portmap) config whose store is the temp data dir."""
        if role == "portmap":
            base: dict[str, Any] = {
                "cniVersion": "1.1.0", "name": NETWORK, "type": "portmap", "backend": "nftables",
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.77.0.2/24"}]},
            }
        else:
            base = {"cniVersion": "1.1.0", "name": NETWORK, "type": "bridge",
                    "bridge": "br-hostile", "isGateway": True, "ipMasq": True,
                    "ipam": {"type": "host-local", "dataDir": str(self.data_dir),
                             "ranges": [[{"subnet": "10.77.0.0/24"}]]}}
        base.update(fields)
        return base

    def call(self, role: str, env: Mapping[str, str | None], stdin: bytes | str | Any,
             why: str = "") -> Raw:
        """Run `role` in H with exactly `env` (None values omitted), PATH and the state dir."""
        self.ns.assert_not_root()
        if isinstance(stdin, str):
            data = stdin.encode()
        elif isinstance(stdin, bytes):
            data = stdin
        else:
            data = json.dumps(stdin).encode()
        full = {"PATH": PLUGIN_PATH, "CNI_BRIDGE_STATE_DIR": str(self.state_dir), **env}
        assignments = [f"{k}={v}" for k, v in full.items() if v is not None]
        argv = ["ip", "netns", "exec", self.ns.name, "env", "-i", *assignments,
                str(self.plugin_dir / role)]
        proc = subprocess.run(argv, input=data, capture_output=True, cwd=self.cwd,
                              timeout=PLUGIN_TIMEOUT, check=False)
        stderr = proc.stderr.decode("utf-8", "replace")
        case = Case(role, {k: v for k, v in env.items() if v is not None}, data, why)
        return Raw(proc.returncode, proc.stdout, stderr,
                   check_output(case, proc.returncode, proc.stdout, stderr))

    def snapshot(self) -> Snapshot:
        return Snapshot(_tree(self.root), host_state(self.ns), machine_state(self.ns))

    def assert_unchanged(self, before: Snapshot, what: str) -> None:
        changes = before.diff(self.snapshot())
        assert not changes, f"{what} changed something:\n" + "\n".join(changes)


@pytest.fixture
def world(host_ns: Netns, plugin_dir: Path, tmp_path: Path) -> World:
    """H plus a temp tree holding data/, state/, cwd/ and a sentinel file next to them."""
    root = tmp_path / "world"
    for sub in ("data", "state", "cwd"):
        (root / sub).mkdir(parents=True)
    (root / "sentinel").write_text("must not change\n")
    return World(host_ns, root, plugin_dir)


def test_world_sees_a_real_add_and_a_file_outside(world: World) -> None:
    """The snapshot notices what an ADD changes, and a file written next to the data dir."""
    before = world.snapshot()
    add = world.call("host-local", world.env("ADD"), world.conf())
    assert add.rc == 0, add.stdout
    (world.root / "stray").write_text("x")
    changes = before.diff(world.snapshot())
    assert any("file data/hostile/10.77.0.2" in c for c in changes)
    assert any("file stray" in c for c in changes)
