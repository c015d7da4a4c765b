"""Import budget of each role and verb (root): every module a plugin call loads is paid by
every call of that kind, so the frozen build's real calls are counted (the call log records
``modules``, the size of ``sys.modules`` at the end of the call) and held to a budget set
from measurement. A new import on a hot path fails here; look at it with an importtime build
(tests/perf/README.md) and import it where it is needed, or raise the budget knowingly."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cni_bridge.admin.runtime import Attachment, Runtime
from cni_bridge.deploy.confdir import parse_network_list
from tests.integration.test_conf_examples import CONF, with_temp_data_dir
from tests.netns import Netns

# Modules loaded at the end of a call, measured on the frozen build, with a margin of about 5%;
# the iptables backend's calls also load its modules and subprocess. (VERSION, answered before
# anything is imported, is held to its own budget in tests/unit/test_import_budget.py.)
NFTABLES = {
    ("bridge", "ADD"): 220,
    ("bridge", "CHECK"): 220,
    ("bridge", "DEL"): 220,
    ("portmap", "ADD"): 134,
    ("portmap", "CHECK"): 134,
    ("portmap", "DEL"): 134,
    ("host-local", "ADD"): 113,
    ("host-local", "DEL"): 113,
    ("loopback", "ADD"): 104,
    ("loopback", "CHECK"): 104,
    ("loopback", "DEL"): 104,
}
IPTABLES = {**NFTABLES, ("bridge", "ADD"): 231, ("bridge", "CHECK"): 231, ("bridge", "DEL"): 231,
            ("portmap", "ADD"): 149, ("portmap", "CHECK"): 149, ("portmap", "DEL"): 149}
BUDGETS = {"10-cni-bridge": NFTABLES, "51-iptables": IPTABLES}
MAPPING = {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}


def calls(log: Path) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("served"):  # a resident server's count: everything it preloaded
            continue
        key = (rec["role"], rec["verb"])
        out[key] = max(out.get(key, 0), rec["modules"])
    return out


# The budgets are the frozen build's; the source tree loads a few more modules.
@pytest.mark.skipif(not os.environ.get("CNI_BRIDGE_PLUGIN_DIR"),
                    reason="CNI_BRIDGE_PLUGIN_DIR (the frozen build) is not set")
@pytest.mark.parametrize("conflist", ["10-cni-bridge", "51-iptables"])
def test_each_call_stays_within_its_import_budget(
    conflist: str, host_ns: Netns, netns: Callable[[str], Netns], plugin_dir: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "calls.jsonl"
    doc = with_temp_data_dir(json.loads((CONF / f"{conflist}.conflist").read_text()),
                             tmp_path / "ipam")
    net = parse_network_list(doc)
    # An empty socket: the calls run here even when a server runs (the serve stage).
    env = {"CNI_BRIDGE_STATE_DIR": str(tmp_path / "state"), "CNI_BRIDGE_LOG": str(log),
           "CNI_BRIDGE_SOCKET": ""}
    runtime = Runtime([plugin_dir], tmp_path / "cache", netns=host_ns.name, env=env)
    att = Attachment("budget-1", "eth0", netns("C").path,
                     capability_args={"portMappings": [MAPPING]})
    runtime.add(net, att)
    runtime.check(net, att)
    runtime.delete(net, att)
    bridge_conf = {**doc["plugins"][0], "name": doc["name"], "cniVersion": doc["cniVersion"]}
    host_local = Runtime([plugin_dir], tmp_path / "cache2", netns=host_ns.name, env=env)
    ipam_net = parse_network_list({"cniVersion": doc["cniVersion"], "name": doc["name"],
                                   "plugins": [{"type": "host-local",
                                                "ipam": bridge_conf["ipam"]}]})
    ipam_att = Attachment("budget-2", "eth0", netns("C2").path)
    host_local.add(ipam_net, ipam_att)
    host_local.delete(ipam_net, ipam_att)
    lo_net = parse_network_list({"cniVersion": doc["cniVersion"], "name": "lo",
                                 "plugins": [{"type": "loopback"}]})
    lo_att = Attachment("budget-3", "eth0", netns("C3").path)
    host_local.add(lo_net, lo_att)
    host_local.check(lo_net, lo_att)
    host_local.delete(lo_net, lo_att)

    measured = calls(log)
    print(f"{conflist}: modules loaded per call: {measured}")
    budget = BUDGETS[conflist]
    over = {k: (v, budget[k]) for k, v in measured.items() if k in budget and v > budget[k]}
    assert not over, f"over the import budget (measured, budget): {over}"
    assert set(budget) <= set(measured)
