"""``cni-bridge install --subnet``: the node's network for its pod CIDR, checked before anything
is written (no root; the node's own addresses are given, never read from this machine)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.admin import main as operator
from cni_bridge.deploy import install, node_conf
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.deploy.install import InstallError
from tests.unit.test_operator_install import make_bundle

net = ipaddress.ip_network
POD = net("10.244.1.0/24")
CLUSTER = net("10.244.0.0/16")


@pytest.mark.parametrize(("text", "message"), [
    ("", "missing pod CIDR: the value is empty"),
    ("  ", "missing pod CIDR: the value is empty"),
    ("10.244.1.7/24", "invalid pod CIDR '10.244.1.7/24': host bits are set; did you mean "
                      "10.244.1.0/24?"),
    ("10.244.1/24", "invalid pod CIDR '10.244.1/24': expected a network"),
    ("pods", "invalid pod CIDR 'pods'"),
])
def test_parse_cidr_names_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?")):
        node_conf.parse_cidr(text)


def test_parse_cidr_list_accepts_commas() -> None:
    assert node_conf.parse_cidr_list(["10.244.1.0/24,fd00:244:1::/64"], "pod CIDR") == (
        POD, net("fd00:244:1::/64"))


@pytest.mark.parametrize(("subnets", "cluster", "message"), [
    ([], [CLUSTER], "missing pod CIDR: pass the node's pod CIDR with --subnet"),
    ([POD, net("10.244.2.0/24")], [], "pod CIDRs 10.244.1.0/24 and 10.244.2.0/24 are both IPv4"),
    ([net("10.245.1.0/24")], [CLUSTER], "pod CIDR 10.245.1.0/24 is not inside the cluster CIDR "
                                         "10.244.0.0/16"),
    ([net("10.244.0.0/15")], [CLUSTER], "pod CIDR 10.244.0.0/15 is not inside"),
    ([POD], [CLUSTER, net("fd00:244::/48")], "cluster CIDR fd00:244::/48 has no pod CIDR of "
                                              "its family"),
])
def test_plan_refuses_cidrs_that_disagree(subnets: list[Any], cluster: list[Any],
                                          message: str) -> None:
    with pytest.raises(InstallError, match=message):
        node_conf.plan_node_network(subnets, cluster)


def test_node_conflist_is_the_default_network_with_the_node_cidrs() -> None:
    node = node_conf.plan_node_network([POD, net("fd00:244:0:1::/64")],
                                       [CLUSTER, net("fd00:244::/48"), CLUSTER], "1.0.0")
    conf = node_conf.node_conflist(node)
    bridge = conf["plugins"][0]
    assert conf["cniVersion"] == "1.0.0"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}],
                                        [{"subnet": "fd00:244:0:1::/64"}]]
    assert bridge["nonMasqueradeCIDRs"] == ["10.244.0.0/16", "fd00:244::/48"]
    del bridge["nonMasqueradeCIDRs"]
    bridge["ipam"]["ranges"] = DEFAULT_CONFLIST["plugins"][0]["ipam"]["ranges"]
    assert {**conf, "cniVersion": DEFAULT_CONFLIST["cniVersion"]} == DEFAULT_CONFLIST


def test_without_a_cluster_cidr_nothing_is_excluded_from_masquerade() -> None:
    conf = node_conf.node_conflist(node_conf.plan_node_network([POD], []))
    assert "nonMasqueradeCIDRs" not in conf["plugins"][0]
    assert conf["cniVersion"] == DEFAULT_CONFLIST["cniVersion"]


def test_overlaps_name_the_other_user() -> None:
    node = node_conf.plan_node_network([POD], [])
    taken = [("network podman in /etc/cni/net.d/87-podman-bridge.conflist", net("10.0.0.0/8")),
             ("address 10.244.1.9/16 on eth0", net("10.244.0.0/16")),
             ("address 192.0.2.1/24 on eth1", net("192.0.2.0/24")),
             ("address fd00::1/8 on eth1", net("fd00::/8"))]
    assert node_conf.find_overlaps(node, taken) == [
        "pod CIDR 10.244.1.0/24 overlaps 10.0.0.0/8 of network podman in "
        "/etc/cni/net.d/87-podman-bridge.conflist",
        "pod CIDR 10.244.1.0/24 overlaps 10.244.0.0/16 of address 10.244.1.9/16 on eth0"]


def write(path: Path, conf: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conf))
    return path


def test_networks_in_conf_dir_skip_our_own_file(tmp_path: Path) -> None:
    other = {"cniVersion": "1.0.0", "name": "other", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.244.1.128/25"}}]}
    write(tmp_path / "20-other.conflist", other)
    write(tmp_path / install.DEFAULT_CONF_NAME, DEFAULT_CONFLIST)
    found = node_conf.networks_in_conf_dir(tmp_path, Path(install.DEFAULT_CONF_NAME))
    assert found == [(f"network other in {tmp_path / '20-other.conflist'}",
                      net("10.244.1.128/25"))]


def test_write_conflist_is_atomic_and_says_what_it_did(tmp_path: Path) -> None:
    path = tmp_path / "net.d" / install.DEFAULT_CONF_NAME
    conf = node_conf.node_conflist(node_conf.plan_node_network([POD], [CLUSTER]))
    assert node_conf.write_conflist(path, conf) == "written"
    assert json.loads(path.read_text()) == conf
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert node_conf.write_conflist(path, conf) == "unchanged"
    other = node_conf.node_conflist(node_conf.plan_node_network([net("10.244.2.0/24")], []))
    assert node_conf.write_conflist(path, other) == "replaced"
    assert [p.name for p in path.parent.iterdir()] == [install.DEFAULT_CONF_NAME]


# --- the command ---------------------------------------------------------------------------------


def snapshot(*dirs: Path) -> dict[str, str]:
    """Every entry under `dirs` with a digest of its content (or link target)."""
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")) if d.exists() else []:
            data = str(p.readlink()).encode() if p.is_symlink() else (
                p.read_bytes() if p.is_file() else b"dir")
            out[str(p)] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """This node's addresses, as `networks_on_node` would read them."""
    addresses = [("address 198.51.100.1/24 on eth0", net("198.51.100.0/24"))]
    monkeypatch.setattr(node_conf, "networks_on_node", lambda bridge: list(addresses))
    return addresses


def run_install(tmp_path: Path, *args: str) -> int:
    source = tmp_path / "dist"
    if not source.exists():
        make_bundle(source, "v1")
    return operator.main(["install", "--from", str(source), "--bin-dir", str(tmp_path / "bin"),
                          "--conf-dir", str(tmp_path / "net.d"), *args])


def test_install_subnet_writes_the_node_network(tmp_path: Path, node: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run_install(tmp_path, "--subnet", "10.244.1.0/24", "--cluster-cidr",
                       "10.244.0.0/16", "--cni-version", "1.0.0") == 0
    path = tmp_path / "net.d" / install.DEFAULT_CONF_NAME
    assert f"network     {path} (written; pod CIDR 10.244.1.0/24)" in capsys.readouterr().out
    conf = json.loads(path.read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert conf["plugins"][0]["nonMasqueradeCIDRs"] == ["10.244.0.0/16"]
    assert run_install(tmp_path, "--subnet", "10.244.1.0/24", "--cluster-cidr",
                       "10.244.0.0/16", "--cni-version", "1.0.0") == 0
    assert "(unchanged; pod CIDR 10.244.1.0/24)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--subnet", "10.88.0.0/24"], "pod CIDR 10.88.0.0/24 overlaps 10.88.0.0/16 of network "
                                   "podman in"),
    (["--subnet", "198.51.100.0/25"], "pod CIDR 198.51.100.0/25 overlaps 198.51.100.0/24 of "
                                      "address 198.51.100.1/24 on eth0"),
    (["--subnet", "10.244.1.0/24", "--subnet", "10.244.2.0/24"], "are both IPv4"),
    (["--cluster-cidr", "10.244.0.0/16"], "missing pod CIDR: pass the node's pod CIDR"),
])
def test_install_refusals_leave_every_dir_as_it_was(tmp_path: Path, node: Any, args: list[str],
                                                    message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    podman = {"cniVersion": "0.4.0", "name": "podman", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet":
                                                                       "10.88.0.0/16"}]]}}]}
    write(tmp_path / "net.d" / "87-podman-bridge.conflist", podman)
    make_bundle(tmp_path / "dist", "v1")
    before = snapshot(tmp_path / "bin", tmp_path / "net.d")
    assert run_install(tmp_path, *args) == 1
    err = capsys.readouterr().err
    assert message in err and err.rstrip().endswith("; nothing was installed")
    assert snapshot(tmp_path / "bin", tmp_path / "net.d") == before
    assert not (tmp_path / "bin").exists()


def test_an_empty_pod_cidr_is_a_usage_error(tmp_path: Path, node: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """What a DaemonSet passes when the node's pod CIDR is not known: `--subnet ""`."""
    with pytest.raises(SystemExit) as info:
        run_install(tmp_path, "--subnet", "")
    assert info.value.code == 2
    assert "argument --subnet: missing pod CIDR: the value is empty" in capsys.readouterr().err
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()
