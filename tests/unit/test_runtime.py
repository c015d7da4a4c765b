"""The product's conflist runtime (cni_bridge.admin.runtime) against fake plugins that record their
calls (no root needed)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.admin.runtime import (
    CACHE_KIND,
    Attachment,
    PluginError,
    Runtime,
    plugin_config,
)
from cni_bridge.deploy.confdir import ConflistError, NetworkList, parse_network_list

# Behaviour comes from the plugin's own config:
#   "fail": {"ADD": {"code": 11, "msg": "..."}}  -> print that error, exit 1
#   "garbage": "text"                            -> print text to stderr, exit 1 (no error JSON)
# On ADD it returns prevResult (or a fresh result) with an interface named after itself appended.
FAKE_PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
me = os.path.basename(sys.argv[0])
command = os.environ.get("CNI_COMMAND", "")
env = {{k: v for k, v in os.environ.items() if k.startswith(("CNI_", "FAKE_"))}}
with open({log!r}, "a") as log:
    log.write(json.dumps({{"plugin": me, "command": command, "env": env, "conf": conf}}) + "\\n")
if "garbage" in conf:
    print(conf["garbage"], file=sys.stderr)
    sys.exit(1)
failure = conf.get("fail", {{}}).get(command)
if failure:
    print(json.dumps(failure))
    sys.exit(1)
if command == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": []}}
    result["interfaces"].append({{"name": me}})
    print(json.dumps(result))
"""

Calls = Callable[[], list[dict[str, Any]]]
ATT = Attachment("c1", "eth0", "/run/netns/fake", "IgnoreUnknown=1;K=V",
                 {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    script = FAKE_PLUGIN.format(python=sys.executable, log=str(tmp_path / "calls.jsonl"))
    for name in ("fake-a", "fake-b", "fake-c"):
        (directory / name).write_text(script)
        (directory / name).chmod(0o755)
    return directory


@pytest.fixture
def calls(tmp_path: Path) -> Calls:
    """Reads the call log; each read drains it."""
    log = tmp_path / "calls.jsonl"

    def read() -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        log.write_text("")
        return [json.loads(line) for line in lines]

    return read


@pytest.fixture
def runtime(plugin_dir: Path, tmp_path: Path) -> Runtime:
    return Runtime([plugin_dir], tmp_path / "cache", env={"FAKE_EXTRA": "1"})


def net(version: str = "1.1.0", **extra: Any) -> NetworkList:
    plugins = extra.pop("plugins", [
        {"type": "fake-a", "a": 1},
        {"type": "fake-b", "capabilities": {"portMappings": True, "ips": False}},
        {"type": "fake-c", "capabilities": {"bandwidth": True}},
    ])
    return parse_network_list({"cniVersion": version, "name": "testnet", "plugins": plugins,
                               **extra})


# --- configuration ------------------------------------------------------------------------------


def test_parse_picks_the_highest_spoken_version_from_cni_versions() -> None:
    doc = {"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.9.9", "0.3.1"], "name": "n",
           "plugins": [{"type": "x"}]}
    assert parse_network_list(doc).cni_version == "1.0.0"


def test_parse_defaults_a_missing_version_to_0_1_0() -> None:
    assert parse_network_list({"name": "n", "plugins": [{"type": "x"}]}).cni_version == "0.1.0"


def test_parse_accepts_a_single_plugin_conf() -> None:
    parsed = parse_network_list('{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}')
    assert parsed.name == "n" and parsed.plugins[0]["type"] == "bridge"


@pytest.mark.parametrize("doc, needle", [
    ({"plugins": [{"type": "x"}]}, "network name"),
    ({"name": "a/b", "plugins": [{"type": "x"}]}, "network name"),
    ({"name": "n", "plugins": []}, "non-empty"),
    ({"name": "n", "plugins": [{"type": "../x"}]}, "type"),
    ({"name": "n", "plugins": [{}]}, "type"),
    ({"name": "n", "plugins": [{"type": "x"}], "disableCheck": "maybe"}, "disableCheck"),
    ({"name": "n", "plugins": [{"type": "x"}], "cniVersion": "one"}, "invalid cniVersion"),
])
def test_parse_rejects_bad_lists(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConflistError, match=needle):
        parse_network_list(doc)


def test_parse_rejects_bad_json() -> None:
    with pytest.raises(ConflistError, match="not valid JSON"):
        parse_network_list(b"{nope")


def test_disable_flags_accept_strings() -> None:
    parsed = net(disableCheck="true", disableGC=True)
    assert parsed.disable_check and parsed.disable_gc


def test_runtime_config_holds_only_declared_and_supplied_capabilities() -> None:
    network = net()
    caps = {"portMappings": [1], "ips": ["10.0.0.2"], "bandwidth": {"x": 1}}
    assert "runtimeConfig" not in plugin_config(network, network.plugins[0], None, caps)
    assert plugin_config(network, network.plugins[1], None, caps)["runtimeConfig"] == {
        "portMappings": [1]}
    assert "runtimeConfig" not in plugin_config(network, network.plugins[2], None, {})


# --- ADD ---------------------------------------------------------------------------------------


def test_add_chains_results_and_injects_name_and_version(runtime: Runtime, calls: Calls) -> None:
    result = runtime.add(net(), ATT)
    assert [i["name"] for i in result["interfaces"]] == ["fake-a", "fake-b", "fake-c"]
    made = calls()
    assert [c["plugin"] for c in made] == ["fake-a", "fake-b", "fake-c"]
    assert all(c["conf"]["name"] == "testnet" and c["conf"]["cniVersion"] == "1.1.0"
               for c in made)
    assert "prevResult" not in made[0]["conf"]
    assert [i["name"] for i in made[2]["conf"]["prevResult"]["interfaces"]] == [
        "fake-a", "fake-b"]
    assert made[1]["conf"]["runtimeConfig"] == {"portMappings": ATT.capability_args[
        "portMappings"]}
    assert made[1]["conf"]["capabilities"] == {"portMappings": True, "ips": False}


def test_add_sets_the_cni_environment_and_keeps_the_callers(
        runtime: Runtime, calls: Calls, plugin_dir: Path) -> None:
    runtime.add(net(), ATT)
    env = {k: v for k, v in calls()[0]["env"].items()
           if not k.startswith("CNI_BRIDGE_") or k == "CNI_BRIDGE_STATE_DIR"}
    assert env.pop("CNI_BRIDGE_STATE_DIR")  # the caller's own variables pass through
    assert env == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/fake",
        "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K=V", "CNI_PATH": str(plugin_dir),
        "FAKE_EXTRA": "1",
    }


def test_add_caches_the_result_like_libcni(runtime: Runtime, tmp_path: Path) -> None:
    network = net()
    result = runtime.add(network, ATT)
    path = tmp_path / "cache" / "results" / "testnet-c1-eth0"
    entry = json.loads(path.read_text())
    assert entry["kind"] == CACHE_KIND
    assert entry["containerId"] == "c1" and entry["ifName"] == "eth0"
    assert entry["networkName"] == "testnet" and entry["netns"] == "/run/netns/fake"
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["K", "V"]]
    assert entry["capabilityArgs"] == dict(ATT.capability_args)
    assert entry["result"] == result
    assert base64.b64decode(entry["config"]) == network.raw
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_failed_add_is_undone_in_reverse_and_not_cached(
        runtime: Runtime, calls: Calls, tmp_path: Path) -> None:
    network = net(plugins=[{"type": "fake-a"}, {"type": "fake-b"},
                           {"type": "fake-c", "fail": {"ADD": {"code": 11, "msg": "busy"}}}])
    with pytest.raises(PluginError) as info:
        runtime.add(network, ATT)
    assert (info.value.plugin, info.value.code, info.value.msg) == ("fake-c", 11, "busy")
    made = calls()
    assert [(c["command"], c["plugin"]) for c in made] == [
        ("ADD", "fake-a"), ("ADD", "fake-b"), ("ADD", "fake-c"),
        ("DEL", "fake-c"), ("DEL", "fake-b"), ("DEL", "fake-a")]
    assert all("prevResult" not in c["conf"] for c in made[3:])
    assert not (tmp_path / "cache" / "results" / "testnet-c1-eth0").exists()


def test_a_plugin_without_error_json_reports_its_stderr(runtime: Runtime) -> None:
    with pytest.raises(PluginError, match="netplugin failed: boom"):
        runtime.add(net(plugins=[{"type": "fake-a", "garbage": "boom"}]), ATT)


@pytest.mark.parametrize("att, needle", [
    (Attachment("-bad"), "container ID"),
    (Attachment("c1", "a/b"), "interface name"),
    (Attachment("c1", "x" * 16), "interface name"),
    (Attachment("c1", ".."), "interface name"),
])
def test_add_validates_the_attachment_first(runtime: Runtime, calls: Calls, att: Attachment,
                                            needle: str) -> None:
    with pytest.raises(ConflistError, match=needle):
        runtime.add(net(), att)
    assert calls() == []


def test_missing_plugin_says_where_it_looked(runtime: Runtime, plugin_dir: Path) -> None:
    with pytest.raises(ConflistError, match=f"'nope' not found in {plugin_dir}"):
        runtime.add(net(plugins=[{"type": "nope"}]), ATT)


def test_plugins_are_searched_in_order(tmp_path: Path, plugin_dir: Path, calls: Calls) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    Runtime([empty, plugin_dir], tmp_path / "cache").add(net(), ATT)
    assert calls()[0]["env"]["CNI_PATH"] == f"{empty}:{plugin_dir}"


# --- CHECK / DEL -------------------------------------------------------------------------------


def test_check_and_del_get_the_cached_result(runtime: Runtime, calls: Calls,
                                             tmp_path: Path) -> None:
    network = net()
    result = runtime.add(network, ATT)
    calls()
    runtime.check(network, ATT)
    checked = calls()
    assert [c["plugin"] for c in checked] == ["fake-a", "fake-b", "fake-c"]
    assert all(c["conf"]["prevResult"] == result for c in checked)
    runtime.delete(network, ATT)
    deleted = calls()
    assert [c["plugin"] for c in deleted] == ["fake-c", "fake-b", "fake-a"]
    assert all(c["conf"]["prevResult"] == result for c in deleted)
    assert not (tmp_path / "cache" / "results" / "testnet-c1-eth0").exists()


def test_del_without_capability_args_uses_those_of_add(runtime: Runtime, calls: Calls) -> None:
    network = net()
    runtime.add(network, ATT)
    calls()
    runtime.delete(network, Attachment("c1", "eth0", "/run/netns/fake"))
    by_plugin = {c["plugin"]: c["conf"] for c in calls()}
    assert by_plugin["fake-b"]["runtimeConfig"] == {
        "portMappings": ATT.capability_args["portMappings"]}


def test_del_is_repeatable_and_works_without_a_cache(runtime: Runtime, calls: Calls) -> None:
    network = net()
    runtime.delete(network, ATT)
    runtime.delete(network, ATT)
    made = calls()
    assert len(made) == 6 and all("prevResult" not in c["conf"] for c in made)


def test_del_below_0_4_0_sends_no_prev_result(runtime: Runtime, calls: Calls) -> None:
    network = net("0.3.1")
    runtime.add(network, ATT)
    calls()
    runtime.delete(network, ATT)
    assert all("prevResult" not in c["conf"] for c in calls())


def test_check_is_refused_below_0_4_0(runtime: Runtime) -> None:
    with pytest.raises(ConflistError, match="no CHECK"):
        runtime.check(net("0.3.1"), ATT)


def test_check_without_cached_result_says_so(runtime: Runtime) -> None:
    with pytest.raises(ConflistError, match="no cached ADD result"):
        runtime.check(net(), ATT)


def test_disable_check_skips_check(runtime: Runtime, calls: Calls) -> None:
    runtime.check(net(disableCheck=True), ATT)
    assert calls() == []


def test_check_failure_carries_the_plugin_error(runtime: Runtime) -> None:
    network = net(plugins=[{"type": "fake-a", "fail": {"CHECK": {
        "code": 999, "msg": "link gone", "details": "veth1"}}}])
    runtime.add(network, ATT)
    with pytest.raises(PluginError, match=r"\[999\] link gone \(veth1\)"):
        runtime.check(network, ATT)


# --- GC / STATUS -------------------------------------------------------------------------------


def test_gc_deletes_stale_cached_attachments_then_sends_gc(runtime: Runtime, calls: Calls,
                                                           tmp_path: Path) -> None:
    network = net()
    runtime.add(network, Attachment("keep", "eth0", "/run/netns/k"))
    runtime.add(network, Attachment("stale", "eth1", "/run/netns/s", "K=V", {"bandwidth": {}}))
    calls()
    assert runtime.gc(network, [("keep", "eth0")]) == []
    made = calls()
    dels = [c for c in made if c["command"] == "DEL"]
    assert [c["plugin"] for c in dels] == ["fake-c", "fake-b", "fake-a"]
    assert dels[0]["env"]["CNI_CONTAINERID"] == "stale"
    assert dels[0]["env"]["CNI_NETNS"] == "/run/netns/s"
    assert dels[0]["env"]["CNI_ARGS"] == "K=V"
    assert dels[0]["conf"]["runtimeConfig"] == {"bandwidth": {}}
    gcs = [c for c in made if c["command"] == "GC"]
    assert [c["plugin"] for c in gcs] == ["fake-a", "fake-b", "fake-c"]
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert all(c["conf"]["cni.dev/valid-attachments"] == valid for c in gcs)
    assert all(c["conf"]["cni.dev/attachments"] == valid for c in gcs)
    assert all(c["env"]["CNI_CONTAINERID"] == "" for c in gcs)
    remaining = sorted(p.name for p in (tmp_path / "cache" / "results").iterdir())
    assert remaining == ["testnet-keep-eth0"]


def test_gc_collects_errors_and_goes_on(runtime: Runtime, calls: Calls) -> None:
    network = net(plugins=[{"type": "fake-a", "fail": {"GC": {"code": 5, "msg": "a"}}},
                           {"type": "fake-b"}])
    errors = runtime.gc(network, [])
    assert [str(e) for e in errors] == ["plugin fake-a failed: [5] a"]
    assert [c["plugin"] for c in calls()] == ["fake-a", "fake-b"]


def test_gc_below_1_1_0_only_deletes(runtime: Runtime, calls: Calls) -> None:
    network = net("1.0.0")
    runtime.add(network, ATT)
    calls()
    runtime.gc(network, [])
    assert {c["command"] for c in calls()} == {"DEL"}


def test_disable_gc_does_nothing(runtime: Runtime, calls: Calls) -> None:
    network = net(disableGC=True)
    runtime.add(network, ATT)
    calls()
    assert runtime.gc(network, []) == []
    assert calls() == []


def test_status_runs_in_order_and_stops_at_the_first_error(runtime: Runtime,
                                                           calls: Calls) -> None:
    network = net(plugins=[{"type": "fake-a"},
                           {"type": "fake-b", "fail": {"STATUS": {"code": 50, "msg": "no"}}},
                           {"type": "fake-c"}])
    with pytest.raises(PluginError, match=r"\[50\] no"):
        runtime.status(network)
    made = calls()
    assert [c["plugin"] for c in made] == ["fake-a", "fake-b"]
    assert made[0]["conf"] == {"type": "fake-a", "name": "testnet", "cniVersion": "1.1.0"}


def test_status_below_1_1_0_is_a_no_op(runtime: Runtime, calls: Calls) -> None:
    runtime.status(net("1.0.0"))
    assert calls() == []


def test_cached_attachments_skip_foreign_and_damaged_files(runtime: Runtime,
                                                           tmp_path: Path) -> None:
    network = net()
    runtime.add(network, ATT)
    results = tmp_path / "cache" / "results"
    (results / "garbage").write_text("{nope")
    (results / "other-net").write_text(json.dumps({
        "kind": CACHE_KIND, "containerId": "x", "ifName": "eth0", "networkName": "other"}))
    assert [(a.container_id, a.ifname) for a in runtime.cached_attachments("testnet")] == [
        ("c1", "eth0")]


def test_a_plugin_running_inside_a_netns_is_prefixed(runtime: Runtime, monkeypatch:
                                                     pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class Done:
        returncode, stdout, stderr = 0, b"{}", b""

    def fake_run(argv: list[str], **kwargs: Any) -> Done:
        seen.append(argv)
        return Done()

    monkeypatch.setattr("cni_bridge.admin.runtime.subprocess.run", fake_run)
    runtime.netns = "cnitest-H"
    runtime.status(net(plugins=[{"type": "fake-a"}]))
    assert seen[0][:4] == ["ip", "netns", "exec", "cnitest-H"]
    assert seen[0][4].endswith("/fake-a")
