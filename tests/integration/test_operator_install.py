"""``cni-bridge install`` with the real frozen bundle: the symlinked layout runs (the bootloader
finds its files through the links), works as a CNI_PATH, and an upgrade while plugins are being
started never lets one fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cni_bridge.admin.runtime import Attachment, Runtime
from cni_bridge.deploy.confdir import parse_network_list
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from tests.netns import Netns

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> Path:
    candidates = [os.environ.get("CNI_BRIDGE_PLUGIN_DIR", ""), str(REPO / "dist" / "cni")]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "cni-bridge").is_file() and (path / "_internal").is_dir():
            return path.resolve()
    pytest.skip("no frozen one-directory build (run build/build.sh)")


def install(source: Path, bin_dir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "cni_bridge", "install", "--from", str(source),
                           "--bin-dir", str(bin_dir)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=True)
    return proc.stdout


def version_of(plugin: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(plugin)], input='{"cniVersion":"1.1.0"}', capture_output=True,
                          text=True, timeout=30, env={"CNI_COMMAND": "VERSION", "PATH": "/bin"},
                          check=False)


def test_installed_links_run_as_every_role(bundle: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install(bundle, bin_dir)
    for role in ("bridge", "host-local", "portmap", "loopback"):
        proc = version_of(bin_dir / role)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    proc = subprocess.run([str(bin_dir / "cni-bridge"), "version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.startswith("cni-bridge ")


def test_installed_plugins_serve_a_network(bundle: Path, tmp_path: Path, host_ns: Netns,
                                           netns: Callable[[str], Netns]) -> None:
    bin_dir = tmp_path / "bin"
    install(bundle, bin_dir)
    doc = json.loads(json.dumps(DEFAULT_CONFLIST))
    doc["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    net = parse_network_list(doc)
    container = netns("C")
    runtime = Runtime([bin_dir], tmp_path / "cache", netns=host_ns.name,
                      env={"CNI_BRIDGE_STATE_DIR": str(tmp_path / "state")})
    att = Attachment("installed-1", "eth0", container.path)
    result = runtime.add(net, att)
    assert result["ips"][0]["address"] == "172.18.0.2/16"
    runtime.check(net, att)
    runtime.delete(net, att)


def test_upgrade_while_plugins_start_never_breaks_one(bundle: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install(bundle, bin_dir)
    changed = tmp_path / "next"
    shutil.copytree(bundle, changed, symlinks=True)
    (changed / "_internal" / "UPGRADE-MARKER").write_text("a different bundle\n")
    failures: list[str] = []
    runs = 0
    stop = threading.Event()

    def keep_starting() -> None:
        nonlocal runs
        while not stop.is_set():
            proc = version_of(bin_dir / "bridge")
            runs += 1
            if proc.returncode != 0 or '"supportedVersions"' not in proc.stdout:
                failures.append(f"rc={proc.returncode} {proc.stdout!r} {proc.stderr!r}")

    worker = threading.Thread(target=keep_starting)
    worker.start()
    try:
        for source in (changed, bundle, changed):
            install(source, bin_dir)
    finally:
        stop.set()
        worker.join()
    assert runs > 0 and failures == []
    bundles = sorted(p.name for p in bin_dir.iterdir() if p.name.startswith(".cni-bridge-"))
    assert len(bundles) == 2  # the current one and the one before
