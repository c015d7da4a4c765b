"""``cni-bridge install --subnet`` of the frozen build on a node (a throwaway namespace): the
node's network is written, and bad input (no pod CIDR, a pod CIDR the node already uses, a
read-only target) is refused with a message naming the culprit and nothing half-written."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_operator_install import bundle
from tests.netns import Netns
from tests.unit.test_node_conf import snapshot

__all__ = ["bundle"]
CONF_NAME = "10-cni-bridge.conflist"


def node_install(node: Netns, bundle: Path, tmp_path: Path, *args: str,
                 read_only: str = "") -> subprocess.CompletedProcess[str]:
    """Run the frozen ``cni-bridge install`` in `node`, in a private mount namespace where the
    directory `read_only` (if given) is a read-only bind mount of itself."""
    cmd = shlex.join([str(bundle / "cni-bridge"), "install", "--bin-dir", str(tmp_path / "bin"),
                      "--conf-dir", str(tmp_path / "net.d"), *args])
    if read_only:
        cmd = f"mount -n --bind -o ro {shlex.quote(read_only)} {shlex.quote(read_only)} && {cmd}"
    return node.run("unshare", "-m", "--propagation", "private", "sh", "-c", cmd, check=False,
                    timeout=120)


def test_install_subnet_writes_the_node_network(bundle: Path, tmp_path: Path,
                                                host_ns: Netns) -> None:
    proc = node_install(host_ns, bundle, tmp_path, "--subnet", "10.244.1.0/24",
                        "--cluster-cidr", "10.244.0.0/16", "--cni-version", "1.0.0")
    assert proc.returncode == 0, proc.stderr
    conf_path = tmp_path / "net.d" / CONF_NAME
    assert f"network     {conf_path} (written; pod CIDR 10.244.1.0/24)" in proc.stdout
    conf = json.loads(conf_path.read_text())
    assert conf["cniVersion"] == "1.0.0"
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert conf["plugins"][0]["nonMasqueradeCIDRs"] == ["10.244.0.0/16"]
    assert (tmp_path / "bin" / "bridge").is_symlink()


@pytest.mark.parametrize(("args", "read_only", "status", "message"), [
    (["--subnet", ""], "", 2, "argument --subnet: missing pod CIDR: the value is empty"),
    (["--cluster-cidr", "10.244.0.0/16"], "", 1,
     "missing pod CIDR: pass the node's pod CIDR with --subnet; nothing was installed"),
    (["--subnet", "10.244.1.0/24"], "", 1,
     "pod CIDR 10.244.1.0/24 overlaps 10.244.1.0/24 of address 10.244.1.10/24 on eth9"),
    (["--subnet", "10.244.2.0/24"], "net.d", 1,
     "cannot write to {tmp}/net.d: Read-only file system; nothing was installed"),
    (["--subnet", "10.244.2.0/24"], "bin", 1,
     "cannot write to {tmp}/bin: Read-only file system; nothing was installed"),
    (["--with-conf"], "net.d", 1,
     "cannot write to {tmp}/net.d: Read-only file system; nothing was installed"),
])
def test_install_refuses_and_writes_nothing(bundle: Path, tmp_path: Path, host_ns: Netns,
                                            args: list[str], read_only: str, status: int,
                                            message: str) -> None:
    host_ns.run("ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
    host_ns.run("ip", "addr", "add", "10.244.1.10/24", "dev", "eth9")
    for d in ("bin", "net.d"):
        (tmp_path / d).mkdir()
    (tmp_path / "net.d" / "99-keep.conflist").write_text('{"name": "keep", "plugins": []}')
    before = snapshot(tmp_path / "bin", tmp_path / "net.d")
    proc = node_install(host_ns, bundle, tmp_path, *args,
                        read_only=str(tmp_path / read_only) if read_only else "")
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    assert message.format(tmp=tmp_path) in proc.stderr
    assert proc.stdout == "" or status == 2
    assert snapshot(tmp_path / "bin", tmp_path / "net.d") == before
