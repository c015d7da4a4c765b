"""Helpers for the host-local integration tests: run ours or the reference on a temp dataDir.

Every plugin runs inside the throwaway "H" namespace with `env -i`; CNI_NETNS names a path that
does not exist (host-local never opens it). Stores live under pytest's tmp_path, never in
/var/lib/cni.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RunPlugin
from tests.netns import PLUGIN_PATH, Netns, PluginRun, plugin_env

REFERENCE = "/usr/lib/cni/host-local"
UNUSED_NETNS = "/run/netns/cnit-host-local-unused"
NETWORK = "hl"


def netconf(data_dir: Path, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    top: dict[str, Any] = {k: ipam.pop(k) for k in ("args", "runtimeConfig") if k in ipam}
    return {"cniVersion": version, "name": NETWORK, "type": "bridge", **top,
            "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}}


def store_files(data_dir: Path, network: str = NETWORK) -> dict[str, bytes]:
    d = data_dir / network
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


def reservation_files(data_dir: Path, network: str = NETWORK) -> dict[str, bytes]:
    return {name: data for name, data in store_files(data_dir, network).items()
            if name != "lock" and not name.startswith(("last_reserved_ip.", "."))}


@dataclass
class HostLocal:
    """One implementation of host-local, run as an executable in `ns`."""

    run_plugin: RunPlugin
    ns: Netns
    executable: str

    def __call__(self, command: str, config: Any, cid: str | None = "c1", ifname: str = "eth0",
                 args: str = "") -> PluginRun:
        return self.run_plugin(self.ns, self.executable, command, config, container_id=cid,
                               netns=UNUSED_NETNS, ifname=ifname, cni_args=args)

    def argv(self, plugin_dir: Path, command: str, cid: str, ifname: str = "eth0",
             args: str = "") -> list[str]:
        """Argv for a raw Popen (concurrency and kill tests): ip netns exec + env -i + plugin."""
        executable = self.executable
        if "/" not in executable:
            executable = str(plugin_dir / executable)
        env = {"PATH": PLUGIN_PATH,
               **plugin_env(command, cid, UNUSED_NETNS, ifname, args, str(plugin_dir))}
        assignments = [f"{k}={v}" for k, v in env.items() if v]
        return ["ip", "netns", "exec", self.ns.name, "env", "-i", *assignments, executable]


def spawn(argv: Sequence[str], config: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    proc.stderr.read()
    rc = proc.wait(timeout=timeout)
    return rc, json.loads(out) if out.strip() else None


def addresses(run: PluginRun) -> list[str]:
    assert run.rc == 0, run.stdout
    return [ip["address"] for ip in run.json.get("ips", [])]


@pytest.fixture
def ours(run_plugin: RunPlugin, host_ns: Netns) -> HostLocal:
    return HostLocal(run_plugin, host_ns, "host-local")


@pytest.fixture
def reference(run_plugin: RunPlugin, host_ns: Netns) -> HostLocal:
    if not os.access(REFERENCE, os.X_OK):
        pytest.skip(f"reference plugin {REFERENCE} not installed")
    return HostLocal(run_plugin, host_ns, REFERENCE)


def test_helpers_run_both_implementations(
    ours: HostLocal, reference: HostLocal, tmp_path: Path
) -> None:
    for impl, sub in ((ours, "ours"), (reference, "ref")):
        assert addresses(impl("ADD", netconf(tmp_path / sub, subnet="10.99.0.0/24"))) \
            == ["10.99.0.2/24"]
        assert reservation_files(tmp_path / sub) == {"10.99.0.2": b"c1\r\neth0"}
