"""The IPAM facade: host-local in-process, anything else executed from CNI_PATH (fake runner)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.dispatch import build_request
from cni_bridge.cni.env import read_env
from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.cni.request import PhaseTimer, Request
from cni_bridge.ipam.facade import Completed, DelegatedIpam, ipam_for, ipam_type
from cni_bridge.ipam.host_local.plugin import HostLocalPlugin


class FakeRunner:
    def __init__(self, rc: int = 0, stdout: Any = b"") -> None:
        self.rc = rc
        self.stdout = stdout if isinstance(stdout, bytes) else json.dumps(stdout).encode()
        self.calls: list[tuple[list[str], bytes, dict[str, str]]] = []

    def __call__(self, argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> Completed:
        self.calls.append((list(argv), stdin, dict(env)))
        return Completed(self.rc, self.stdout)


@pytest.fixture
def cni_path(tmp_path: Path) -> Path:
    plugin = tmp_path / "bin" / "static"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\nexit 0\n")
    plugin.chmod(0o755)
    return plugin.parent


def make_request(config: dict[str, Any], cni_path: Path, command: str = "ADD") -> Request:
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
               "CNI_IFNAME": "eth0", "CNI_PATH": f"/nonexistent:{cni_path}",
               "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p", "OTHER": "kept"}
    stdin = json.dumps(config, indent=1).encode()
    return build_request(read_env(environ), stdin, PhaseTimer())


def conf(kind: str = "static", version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": "n", "type": "bridge", "ipam": {"type": kind}}


def test_host_local_runs_in_process(cni_path: Path) -> None:
    ipam = ipam_for(make_request(conf("host-local"), cni_path), extra_arg_keys=frozenset({"MAC"}))
    assert isinstance(ipam, HostLocalPlugin)
    assert ipam.arg_keys == frozenset({"IP", "MAC"})


def test_ipam_type_validation() -> None:
    with pytest.raises(ConfigError, match="missing 'ipam.type'"):
        ipam_type({"ipam": {}})
    with pytest.raises(ConfigError, match="invalid ipam.type"):
        ipam_type({"ipam": {"type": "../bin/sh"}})


def test_delegated_add_same_env_and_stdin(cni_path: Path) -> None:
    runner = FakeRunner(stdout={"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]})
    req = make_request(conf(), cni_path)
    ipam = ipam_for(req, runner=runner)
    result = ipam.add(req)
    assert [str(ip.address) for ip in result.ips] == ["10.1.0.5/24"]
    ((argv, stdin, env),) = runner.calls
    assert argv == [str(cni_path / "static")]
    assert stdin == req.stdin  # the same bytes, not a re-encoding
    assert env["CNI_COMMAND"] == "ADD" and env["OTHER"] == "kept"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"


def test_delegated_result_parsed_by_its_own_version(cni_path: Path) -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1"}}
    req = make_request(conf(), cni_path)
    result = DelegatedIpam("static", FakeRunner(stdout=legacy)).add(req)
    assert str(result.ips[0].address) == "10.1.0.5/24" and str(result.ips[0].gateway) == "10.1.0.1"
    # No cniVersion in the output: the config's version is assumed (here 0.4.0 shape).
    req = make_request(conf(version="0.4.0"), cni_path)
    bare = {"ips": [{"version": "4", "address": "10.1.0.6/24"}]}
    assert str(DelegatedIpam("static", FakeRunner(stdout=bare)).add(req).ips[0].address) \
        == "10.1.0.6/24"


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
def test_delegated_verbs_override_only_the_command(cni_path: Path, command: str) -> None:
    runner = FakeRunner()
    req = make_request(conf(version="1.1.0"), cni_path)
    getattr(DelegatedIpam("static", runner), {"DEL": "delete"}.get(command, command.lower()))(req)
    assert runner.calls[0][2]["CNI_COMMAND"] == command


def test_delegated_error_keeps_code_msg_details(cni_path: Path) -> None:
    runner = FakeRunner(1, {"code": 11, "msg": "busy", "details": "try later"})
    with pytest.raises(CniError) as info:
        DelegatedIpam("static", runner).add(make_request(conf(), cni_path))
    assert (info.value.code, info.value.msg, info.value.details) == (11, "busy", "try later")


def test_delegated_failure_without_output(cni_path: Path) -> None:
    with pytest.raises(CniError, match="netplugin static failed with no error message"):
        DelegatedIpam("static", FakeRunner(2)).delete(make_request(conf(), cni_path))
    with pytest.raises(CniError, match="netplugin static failed: panic"):
        DelegatedIpam("static", FakeRunner(2, b"panic: oops")).delete(
            make_request(conf(), cni_path))


def test_delegated_garbage_result(cni_path: Path) -> None:
    with pytest.raises(CniError, match="invalid ADD result"):
        DelegatedIpam("static", FakeRunner(0, b"not json")).add(make_request(conf(), cni_path))


def test_plugin_not_in_path(cni_path: Path) -> None:
    req = make_request(conf("dhcp", "1.1.0"), cni_path)
    with pytest.raises(CniError) as info:
        DelegatedIpam("dhcp", FakeRunner()).add(req)
    assert info.value.msg.startswith('failed to find plugin "dhcp" in path')
    with pytest.raises(CniError) as info:
        DelegatedIpam("dhcp", FakeRunner()).status(req)
    assert info.value.code == 50


def test_delegated_addresses_held_from_prev_result(cni_path: Path) -> None:
    config = {**conf(version="1.0.0"),
              "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}}
    req = make_request(config, cni_path, "DEL")
    assert [str(a) for a in DelegatedIpam("static").addresses_held(req)] == ["10.1.0.5/24"]
