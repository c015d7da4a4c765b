"""HostLocalPlugin through the dispatcher, on temporary data dirs (no root, no namespace)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.dispatch import build_request, dispatch
from cni_bridge.cni.env import read_env
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import PhaseTimer, Request
from cni_bridge.ipam.host_local.plugin import HostLocalPlugin


def netconf(data_dir: Path, version: str = "1.1.0", **ipam: Any) -> dict[str, Any]:
    ipam = {"type": "host-local", "subnet": "10.9.0.0/29", "dataDir": str(data_dir), **ipam}
    return {"cniVersion": version, "name": "n1", "type": "bridge", "ipam": ipam}


def request(command: str, config: dict[str, Any], cid: str = "c1", ifname: str = "eth0",
            args: str = "") -> Request:
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
               "CNI_IFNAME": ifname, "CNI_PATH": "/nonexistent", "CNI_ARGS": args}
    return build_request(read_env(environ), json.dumps(config).encode(), PhaseTimer())


def call(command: str, config: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    """The whole dispatcher path: (exit code, parsed stdout or None)."""
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": kw.get("cid", "c1"), "CNI_NETNS": "/x",
               "CNI_IFNAME": kw.get("ifname", "eth0"), "CNI_PATH": "/nonexistent",
               "CNI_ARGS": kw.get("args", "")}
    out = dispatch("host-local", "test", environ, lambda: json.dumps(config).encode(),
                   HostLocalPlugin)
    return out.exit_code, json.loads(out.stdout) if out.stdout else None


def test_add_result_and_versions(tmp_path: Path) -> None:
    conf = netconf(tmp_path, "0.4.0", routes=[{"dst": "0.0.0.0/0"}])
    rc, doc = call("ADD", conf)
    assert rc == 0
    assert doc == {
        "cniVersion": "0.4.0",
        "ips": [{"version": "4", "address": "10.9.0.2/29", "gateway": "10.9.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }


def test_add_with_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.9.0.53\nsearch example.test\n")
    rc, doc = call("ADD", netconf(tmp_path, resolvConf=str(resolv)))
    assert rc == 0 and doc["dns"] == {"nameservers": ["10.9.0.53"], "search": ["example.test"]}
    rc, doc = call("ADD", netconf(tmp_path, resolvConf=str(tmp_path / "missing")), cid="c2")
    assert rc == 1 and doc["code"] == 5 and "missing" in doc["msg"]


def test_del_is_idempotent_and_tolerates_broken_ranges(tmp_path: Path) -> None:
    assert call("ADD", netconf(tmp_path))[0] == 0
    broken = netconf(tmp_path, subnet="not-a-subnet")
    assert call("DEL", broken) == (0, None)
    assert call("DEL", broken) == (0, None)
    assert sorted(os.listdir(tmp_path / "n1")) == ["last_reserved_ip.0", "lock"]


def test_del_without_store_creates_nothing(tmp_path: Path) -> None:
    assert call("DEL", netconf(tmp_path / "absent")) == (0, None)
    assert not (tmp_path / "absent").exists()


def test_del_with_unknown_cni_args_still_releases(tmp_path: Path) -> None:
    call("ADD", netconf(tmp_path))
    assert call("DEL", netconf(tmp_path), args="MAC=0a:58:00:00:00:01") == (0, None)
    assert "10.9.0.2" not in os.listdir(tmp_path / "n1")


def test_check(tmp_path: Path) -> None:
    conf = netconf(tmp_path)
    rc, result = call("ADD", conf)
    assert rc == 0
    assert call("CHECK", {**conf, "prevResult": result}) == (0, None)
    rc, doc = call("CHECK", {**conf, "prevResult": result}, cid="other")
    assert rc == 1 and doc["msg"] == "host-local: Failed to find address added by container other"
    wrong = {**result, "ips": [{"address": "10.9.0.5/29", "gateway": "10.9.0.1"},
                               {"address": "192.168.7.7/24"}]}  # the 192.168 one is not ours
    rc, doc = call("CHECK", {**conf, "prevResult": wrong})
    assert rc == 1
    assert doc["msg"] == "host-local: addresses of container c1 ifname eth0 differ from prevResult"
    assert doc["details"] == (
        "in prevResult but not reserved: 10.9.0.5; reserved but not in prevResult: 10.9.0.2"
    )


def test_check_below_040_is_refused(tmp_path: Path) -> None:
    rc, doc = call("CHECK", netconf(tmp_path, "0.3.1"))
    assert rc == 1 and doc["code"] == 1


def test_gc(tmp_path: Path) -> None:
    for cid in ("a", "b", "c"):
        call("ADD", netconf(tmp_path), cid=cid)
    keep = [{"containerID": "b", "ifname": "eth0"}]
    conf = {**netconf(tmp_path), "cni.dev/valid-attachments": keep}
    assert call("GC", conf) == (0, None)
    assert sorted(os.listdir(tmp_path / "n1")) == ["10.9.0.3", "last_reserved_ip.0", "lock"]


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_need_110(tmp_path: Path, command: str) -> None:
    conf = {**netconf(tmp_path, "1.0.0"), "cni.dev/valid-attachments": []}
    rc, doc = call(command, conf)
    assert rc == 1 and doc["code"] == 1


def test_status(tmp_path: Path) -> None:
    conf = netconf(tmp_path)
    assert call("STATUS", conf) == (0, None)  # no store yet, but it can be created
    for n in range(5):
        call("ADD", conf, cid=f"c{n}")
    rc, doc = call("STATUS", conf)
    assert rc == 1 and doc["code"] == 50
    assert doc["msg"] == "range set 0 (10.9.0.1-10.9.0.6) is exhausted"
    call("DEL", conf, cid="c0")
    assert call("STATUS", conf) == (0, None)


def test_status_unusable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    rc, doc = call("STATUS", netconf(tmp_path / "file"))
    assert rc == 1 and doc["code"] == 50 and doc["msg"].endswith("file is not a directory")
    rc, doc = call("STATUS", netconf(tmp_path / "file" / "sub"))
    assert rc == 1 and doc["code"] == 50 and "file/sub: Not a directory" in doc["msg"]
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    rc, doc = call("STATUS", netconf(tmp_path / "link"))
    assert rc == 1 and doc["code"] == 50 and "symbolic link" in doc["msg"]


def test_addresses_held_for_the_bridge(tmp_path: Path) -> None:
    conf = netconf(tmp_path)
    plugin = HostLocalPlugin()
    plugin.add(request("ADD", conf))
    held = plugin.addresses_held(request("DEL", conf))
    assert [str(i) for i in held] == ["10.9.0.2/29"]
    assert plugin.addresses_held(request("DEL", conf, cid="nobody")) == ()
    assert plugin.addresses_held(request("DEL", netconf(tmp_path / "none"))) == ()


def test_in_process_extra_arg_keys(tmp_path: Path) -> None:
    conf = netconf(tmp_path)
    with pytest.raises(CniError, match="unknown args"):
        HostLocalPlugin().add(request("ADD", conf, args="MAC=0a:58:00:00:00:01"))
    result = HostLocalPlugin(frozenset({"MAC"})).add(
        request("ADD", conf, args="MAC=0a:58:00:00:00:01;IP=10.9.0.4"))
    assert [str(ip.address) for ip in result.ips] == ["10.9.0.4/29"]


def test_phase_timing_recorded(tmp_path: Path) -> None:
    req = request("ADD", netconf(tmp_path))
    HostLocalPlugin().add(req)
    assert "ipam" in req.timer.phases
