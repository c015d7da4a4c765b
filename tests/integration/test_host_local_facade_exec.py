"""The IPAM facade executing a real foreign IPAM plugin (/usr/lib/cni/static) from CNI_PATH,
and host-local in-process, both inside the throwaway namespace (the facade runs in a child
Python process there; the test process never changes namespace)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Netns

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from cni_bridge.ipam.facade import ipam_for
from cni_bridge.cni.dispatch import build_request
from cni_bridge.cni.env import read_env
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import PhaseTimer
from cni_bridge.cni.result import result_dict
environ = {{"CNI_COMMAND": sys.argv[1], "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": sys.argv[2], "CNI_ARGS": sys.argv[3]}}
req = build_request(read_env(environ), sys.stdin.buffer.read(), PhaseTimer())
ipam = ipam_for(req, extra_arg_keys=frozenset({{"MAC"}}))
try:
    if sys.argv[1] == "ADD":
        out = {{"result": result_dict(ipam.add(req), "1.1.0")}}
    else:
        held = [str(a) for a in ipam.addresses_held(req)]
        ipam.delete(req)
        out = {{"held": held}}
except CniError as exc:
    out = {{"error": exc.to_dict()}}
print(json.dumps(out))
"""


def facade(ns: Netns, command: str, config: Any, cni_path: str = "/usr/lib/cni",
           args: str = "") -> Any:
    script = SCRIPT.format(repo=str(REPO))
    proc = ns.run(sys.executable, "-c", script, command, cni_path, args,
                  input=json.dumps(config))
    return json.loads(proc.stdout)


@pytest.fixture
def static_available() -> None:
    if not os.access("/usr/lib/cni/static", os.X_OK):
        pytest.skip("/usr/lib/cni/static not installed")


def test_foreign_ipam_is_executed(host_ns: Netns, static_available: None) -> None:
    config = {"cniVersion": "1.0.0", "name": "fx", "type": "bridge",
              "ipam": {"type": "static",
                       "addresses": [{"address": "10.80.0.5/24", "gateway": "10.80.0.1"}]}}
    out = facade(host_ns, "ADD", config)
    assert out["result"]["ips"] == [{"address": "10.80.0.5/24", "gateway": "10.80.0.1"}]
    bad = {**config, "ipam": {"type": "static", "addresses": [{"address": "nonsense"}]}}
    err = facade(host_ns, "ADD", bad)["error"]
    assert err["code"] != 0 and err["msg"]  # the plugin's own error object, passed through
    missing = facade(host_ns, "ADD", {**config, "ipam": {"type": "no-such-ipam"}})["error"]
    assert missing["msg"].startswith('failed to find plugin "no-such-ipam" in path')


def test_host_local_in_process_tolerates_bridge_args(host_ns: Netns, tmp_path: Path) -> None:
    config = {"cniVersion": "1.0.0", "name": "fx", "type": "bridge",
              "ipam": {"type": "host-local", "subnet": "10.81.0.0/24", "dataDir": str(tmp_path)}}
    out = facade(host_ns, "ADD", config, args="MAC=0a:58:0a:51:00:09")
    assert out["result"]["ips"] == [{"address": "10.81.0.2/24", "gateway": "10.81.0.1"}]
    out = facade(host_ns, "DEL", config, args="MAC=0a:58:0a:51:00:09")
    assert out["held"] == ["10.81.0.2/24"]
    assert sorted(os.listdir(tmp_path / "fx")) == ["last_reserved_ip.0", "lock"]
