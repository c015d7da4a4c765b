"""``cni-bridge install`` on a fake one-directory bundle in temp dirs (no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cni_bridge import PLUGIN_ROLES
from cni_bridge.admin import main as operator
from cni_bridge.deploy import install
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST

EXE = """#!/bin/sh
# stands in for the frozen executable: prints its role and which bundle it came from
echo "$(basename "$0") {tag} $(cat "$(dirname "$(readlink -f "$0")")/_internal/lib.txt")"
"""


def make_bundle(path: Path, tag: str) -> Path:
    """A dist/cni look-alike: executable, _internal/ and the role symlinks."""
    (path / "_internal" / "sub").mkdir(parents=True)
    (path / "_internal" / "lib.txt").write_text(f"lib-{tag}\n")
    (path / "_internal" / "sub" / "mod.so").write_bytes(b"\x7fELF" + tag.encode())
    os.symlink("mod.so", path / "_internal" / "sub" / "mod.so.1")
    (path / "cni-bridge").write_text(EXE.format(tag=tag))
    (path / "cni-bridge").chmod(0o755)
    for role in PLUGIN_ROLES:
        os.symlink("cni-bridge", path / role)
    return path


def run(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True, check=True).stdout.strip()


def bundles(bin_dir: Path) -> list[str]:
    return sorted(p.name for p in bin_dir.iterdir() if p.name.startswith(".cni-bridge-"))


def test_install_links_every_name_into_one_bundle(tmp_path: Path) -> None:
    source = make_bundle(tmp_path / "dist", "v1")
    bin_dir = tmp_path / "bin"
    report = install.install(source, bin_dir, "1.0")
    assert not report.reused and report.linked == [*PLUGIN_ROLES, "cni-bridge"]
    assert report.bundle.name.startswith(".cni-bridge-1.0-")
    for name in (*PLUGIN_ROLES, "cni-bridge"):
        link = bin_dir / name
        assert link.is_symlink()
        assert os.readlink(link) == f"{report.bundle.name}/cni-bridge"
        assert run(link) == f"{name} v1 lib-v1"
    copied = report.bundle
    assert (copied / "_internal" / "sub" / "mod.so").read_bytes() == b"\x7fELFv1"
    assert os.readlink(copied / "_internal" / "sub" / "mod.so.1") == "mod.so"
    assert os.readlink(copied / "bridge") == "cni-bridge"  # the bundle is a CNI_PATH itself
    assert os.access(copied / "cni-bridge", os.X_OK)
    assert not [p for p in bin_dir.iterdir() if ".tmp-" in p.name or ".new-" in p.name]


def test_reinstalling_the_same_bundle_reuses_it(tmp_path: Path) -> None:
    source = make_bundle(tmp_path / "dist", "v1")
    first = install.install(source, tmp_path / "bin", "1.0")
    again = install.install(source, tmp_path / "bin", "1.0")
    assert again.reused and again.bundle == first.bundle and not again.removed


def test_upgrade_switches_links_keeps_the_previous_and_prunes_older(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    v1 = install.install(make_bundle(tmp_path / "d1", "v1"), bin_dir, "1.0")
    v2 = install.install(make_bundle(tmp_path / "d2", "v2"), bin_dir, "2.0")
    assert run(bin_dir / "bridge") == "bridge v2 lib-v2"
    assert bundles(bin_dir) == sorted([v1.bundle.name, v2.bundle.name])
    v3 = install.install(make_bundle(tmp_path / "d3", "v3"), bin_dir, "3.0")
    assert run(bin_dir / "portmap") == "portmap v3 lib-v3"
    assert bundles(bin_dir) == sorted([v2.bundle.name, v3.bundle.name])
    assert v3.removed == [v1.bundle]


def test_install_replaces_foreign_plugins_atomically(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bridge").write_text("#!/bin/sh\necho reference\n")
    (bin_dir / "loopback").write_text("#!/bin/sh\necho reference\n")
    (bin_dir / "tuning").write_text("other plugin\n")
    report = install.install(make_bundle(tmp_path / "dist", "v1"), bin_dir, "1.0")
    assert report.replaced == ["bridge", "loopback"]  # the reference's, under our names
    assert run(bin_dir / "bridge") == "bridge v1 lib-v1"
    assert run(bin_dir / "loopback") == "loopback v1 lib-v1"
    assert (bin_dir / "tuning").read_text() == "other plugin\n"


def test_install_refuses_a_directory_in_the_way(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    (bin_dir / "portmap").mkdir(parents=True)
    with pytest.raises(install.InstallError, match="is a directory"):
        install.install(make_bundle(tmp_path / "dist", "v1"), bin_dir, "1.0")


def test_install_needs_an_executable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(install.InstallError, match="build/build.sh"):
        install.install(tmp_path / "empty", tmp_path / "bin")


def test_digest_follows_content(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", "v1")
    b = make_bundle(tmp_path / "b", "v1")
    assert install.bundle_digest(a) == install.bundle_digest(b)
    (b / "_internal" / "lib.txt").write_text("changed")
    assert install.bundle_digest(a) != install.bundle_digest(b)


def test_write_default_conf_never_overwrites(tmp_path: Path) -> None:
    path, written = install.write_default_conf(tmp_path / "net.d")
    assert written and json.loads(path.read_text()) == DEFAULT_CONFLIST
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    path.write_text("mine")
    assert install.write_default_conf(tmp_path / "net.d") == (path, False)
    assert path.read_text() == "mine"
    assert [p.name for p in (tmp_path / "net.d").iterdir()] == [install.DEFAULT_CONF_NAME]


def test_install_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_bundle(tmp_path / "dist", "v1")
    assert operator.main(["install", "--from", str(source), "--bin-dir", str(tmp_path / "bin"),
                          "--with-conf", "--conf-dir", str(tmp_path / "net.d")]) == 0
    out = capsys.readouterr().out
    assert "(copied)" in out
    assert "linked      bridge, host-local, portmap, loopback, cni-bridge" in out
    assert f"network     {tmp_path / 'net.d' / install.DEFAULT_CONF_NAME} (written)" in out
    assert operator.main(["install", "--from", str(source), "--bin-dir",
                          str(tmp_path / "bin")]) == 0
    assert "(already there, reused)" in capsys.readouterr().out


def test_launchers_run_this_source_tree(tmp_path: Path) -> None:
    # The venv may have the package installed: the launchers' own path must hold it too.
    assert (install.REPO_ROOT / "cni_bridge" / "entry.py").is_file()
    install.write_launchers(tmp_path)
    proc = subprocess.run([str(tmp_path / "cni-bridge"), "version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.startswith("cni-bridge ")
    proc = subprocess.run([str(tmp_path / "bridge")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0 and "CNI bridge plugin" in proc.stderr
