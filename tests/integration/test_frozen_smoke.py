"""Smoke test of the frozen build (build/build.sh -> dist/cni), not of the source tree.

Runs only when CNI_BRIDGE_PLUGIN_DIR points at a built plugin directory (tests/run.sh sets it);
skipped otherwise. Every plugin call runs inside a throwaway namespace (the `host_ns` fixture).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import RunPlugin
from tests.netns import Netns

PLUGIN_DIR = os.environ.get("CNI_BRIDGE_PLUGIN_DIR", "")
ROLES = ("bridge", "host-local", "portmap", "loopback")
EXPECTED_VERSION = (
    '{"cniVersion":"1.1.0","supportedVersions":'
    '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}'
)

pytestmark = pytest.mark.skipif(
    not PLUGIN_DIR, reason="CNI_BRIDGE_PLUGIN_DIR is not set (no frozen build to test)"
)


def _version(run_plugin: RunPlugin, ns: Netns, executable: str, stdin: str) -> str:
    run = run_plugin(
        ns,
        executable,
        "VERSION",
        stdin,
        container_id=None,
        netns=None,
        ifname=None,
        env={"CNI_PATH": None},
    )
    assert run.rc == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("stdin", ['{"cniVersion":"1.1.0"}', ""], ids=["config", "empty"])
def test_version_through_each_name(
    run_plugin: RunPlugin, host_ns: Netns, role: str, stdin: str
) -> None:
    stdout = _version(run_plugin, host_ns, role, stdin)
    # Exactly the reference's shape: one line of compact JSON and a newline.
    assert stdout == EXPECTED_VERSION + "\n"


def test_role_names_share_one_executable() -> None:
    """bridge, host-local and portmap are links to cni-bridge, not copies of the bundle."""
    main = Path(PLUGIN_DIR, "cni-bridge")
    assert main.is_file() and os.access(main, os.X_OK)
    for role in ROLES:
        assert Path(PLUGIN_DIR, role).samefile(main), f"{role} is not a link to cni-bridge"


def test_symlink_from_another_directory(
    run_plugin: RunPlugin, host_ns: Netns, tmp_path: Path
) -> None:
    """A runtime's CNI_PATH may hold symlinks into the install dir (cri-o style plugin dirs):
    the bootloader must still find its files, and the role must come from the link's name."""
    link = tmp_path / "portmap"
    link.symlink_to(Path(PLUGIN_DIR, "cni-bridge").resolve())
    assert _version(run_plugin, host_ns, str(link), "") == EXPECTED_VERSION + "\n"
    other = tmp_path / "cni-bridge-copy-name"
    other.symlink_to(Path(PLUGIN_DIR, "cni-bridge").resolve())
    proc = host_ns.run(str(other), "--help", check=False)
    assert proc.returncode == 0
    assert "usage:" in proc.stdout


def test_operator_help(host_ns: Netns) -> None:
    proc = host_ns.run(str(Path(PLUGIN_DIR, "cni-bridge")), "--help", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage: cni-bridge" in proc.stdout


def test_no_command_prints_about_text(run_plugin: RunPlugin, host_ns: Netns) -> None:
    for role in ROLES:
        run = run_plugin(host_ns, role, None, "", container_id=None, netns=None, ifname=None)
        assert run.rc == 0 and run.stdout == ""
        assert "CNI protocol versions supported" in run.stderr


def test_not_run_from_source() -> None:
    """The executable is a frozen ELF binary, not a launcher script for the source tree."""
    assert Path(PLUGIN_DIR, "cni-bridge").read_bytes()[:4] == b"\x7fELF"


def test_children_get_the_runtime_environment(
    run_plugin: RunPlugin, host_ns: Netns, tmp_path: Path
) -> None:
    """A delegated IPAM plugin (here: a spy) must not inherit the bootloader's LD_LIBRARY_PATH
    (pointing into the bundle) or its _PYI_* variables; the runtime's own variables pass."""
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    env_file = tmp_path / "spy.env"
    spy = spy_dir / "envspy"
    spy.write_text(f'#!/bin/sh\nenv > "{env_file}"\n')
    spy.chmod(0o755)
    config = {
        "cniVersion": "1.1.0",
        "name": "spynet",
        "type": "bridge",
        "bridge": "cbr0",
        "ipam": {"type": "envspy"},
    }
    run = run_plugin(
        host_ns,
        "bridge",
        "STATUS",
        config,
        container_id=None,
        netns=None,
        ifname=None,
        cni_path=f"{spy_dir}:{PLUGIN_DIR}",
        env={"LD_LIBRARY_PATH": "/opt/runtime-lib"},
    )
    assert run.rc == 0, run.stdout + run.stderr
    seen = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert seen.get("CNI_COMMAND") == "STATUS"
    assert seen.get("LD_LIBRARY_PATH") == "/opt/runtime-lib"
    assert not [name for name in seen if name.startswith("_PYI_") or name.endswith("_ORIG")]
