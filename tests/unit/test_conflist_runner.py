"""The mini-runtime against fake plugins that record what they were given (no root needed)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conflist_runner import (
    ConfList,
    ConflistError,
    PluginError,
    Runtime,
    RuntimeConf,
    parse_conflist,
)

RUNNER = Path(__file__).resolve().parents[1] / "conflist_runner.py"

# Behaviour comes from the plugin's own config, since the runtime gives plugins a clean env:
#   "fail": {"ADD": {"code": 11, "msg": "..."}}  -> print that error, exit 1
#   "garbage": "text"                            -> print text and exit 1 (no error JSON)
# On ADD it returns prevResult (or a fresh result) with an interface named after itself appended.
FAKE_PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
me = os.path.basename(sys.argv[0])
command = os.environ.get("CNI_COMMAND", "")
env = dict(os.environ)
env.pop("LC_CTYPE", None)  # set by Python itself (PEP 538) under the C locale
with open({log!r}, "a") as log:
    log.write(json.dumps({{"plugin": me, "env": env, "conf": conf}}) + "\\n")
if "garbage" in conf:
    print(conf["garbage"])
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
RT = RuntimeConf("c1", "/run/netns/fake", "eth0", "IgnoreUnknown=1;K=V", {"portMappings": [1]})


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
    """Reads the log; each call drains it, so a test sees only what happened since."""
    log = tmp_path / "calls.jsonl"

    def read() -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        log.write_text("")
        return [json.loads(line) for line in lines]

    return read


@pytest.fixture
def runtime(plugin_dir: Path, tmp_path: Path) -> Runtime:
    return Runtime([str(plugin_dir)], str(tmp_path / "cache"))


def conflist(version: str = "1.0.0", *plugins: dict[str, Any], **top: Any) -> ConfList:
    listed = list(plugins) or [{"type": "fake-a"}, {"type": "fake-b"}, {"type": "fake-c"}]
    return parse_conflist({"cniVersion": version, "name": "net1", "plugins": listed, **top})


def seen(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["env"]["CNI_COMMAND"], r["plugin"]) for r in records]


def test_add_injects_name_and_version(runtime: Runtime, calls: Calls) -> None:
    conf = conflist("0.4.0", {"type": "fake-a", "name": "other", "cniVersion": "9.9.9", "x": 1})
    runtime.add(conf, RT)
    [record] = calls()
    assert record["conf"] == {"type": "fake-a", "name": "net1", "cniVersion": "0.4.0", "x": 1}


def test_runtime_config_only_for_declared_and_supplied_capabilities(
    runtime: Runtime, calls: Calls
) -> None:
    caps = {"portMappings": True, "mac": False, "ips": True}
    conf = conflist("1.0.0", {"type": "fake-a", "capabilities": caps}, {"type": "fake-b"})
    rt = RuntimeConf("c1", "/x", "eth0", "", {"portMappings": [{"hostPort": 80}], "mac": "m"})
    runtime.add(conf, rt)
    first, second = calls()
    # mac is supplied but declared false; ips is declared but not supplied.
    assert first["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert first["conf"]["capabilities"] == caps  # libcni leaves it in the request
    assert "runtimeConfig" not in second["conf"]


def test_add_chains_prev_result(runtime: Runtime, calls: Calls) -> None:
    result = runtime.add(conflist(), RT)
    records = calls()
    assert seen(records) == [("ADD", "fake-a"), ("ADD", "fake-b"), ("ADD", "fake-c")]
    assert "prevResult" not in records[0]["conf"]
    assert records[1]["conf"]["prevResult"]["interfaces"] == [{"name": "fake-a"}]
    assert records[2]["conf"]["prevResult"]["interfaces"] == [
        {"name": "fake-a"},
        {"name": "fake-b"},
    ]
    assert [i["name"] for i in result["interfaces"]] == ["fake-a", "fake-b", "fake-c"]


def test_environment_is_exactly_the_cni_variables(
    runtime: Runtime, calls: Calls, plugin_dir: Path
) -> None:
    runtime.add(conflist("1.0.0", {"type": "fake-a"}), RT)
    env = calls()[0]["env"]
    assert env.pop("PATH")
    env.pop("CNI_BRIDGE_STATE_DIR", None)  # the suite's private record dir, passed through
    env.pop("CNI_BRIDGE_SOCKET", None)  # a private resident server, passed through
    assert env == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/fake",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K=V",
        "CNI_PATH": str(plugin_dir),
    }


def test_cache_contents(runtime: Runtime, tmp_path: Path) -> None:
    conf = conflist()
    result = runtime.add(conf, RT)
    path = tmp_path / "cache" / "results" / "net1-c1-eth0"
    entry = json.loads(path.read_text())
    assert entry.pop("config") == base64.b64encode(conf.raw).decode()
    assert entry == {
        "kind": "cniCacheV1",
        "containerId": "c1",
        "ifName": "eth0",
        "networkName": "net1",
        "netns": "/run/netns/fake",
        "cniArgs": [["IgnoreUnknown", "1"], ["K", "V"]],
        "capabilityArgs": {"portMappings": [1]},
        "result": result,
    }
    assert path.stat().st_mode & 0o777 == 0o600


def test_cache_omits_empty_fields(runtime: Runtime) -> None:
    rt = RuntimeConf("c2", "", "eth1")
    runtime.add(conflist(), rt)
    entry = runtime.cache_entry("net1", rt)
    assert entry is not None
    assert not {"netns", "cniArgs", "capabilityArgs"} & entry.keys()


def test_check_gets_cached_result_in_order(runtime: Runtime, calls: Calls) -> None:
    result = runtime.add(conflist(), RT)
    calls()
    runtime.check(conflist(), RT)
    records = calls()
    assert seen(records) == [("CHECK", "fake-a"), ("CHECK", "fake-b"), ("CHECK", "fake-c")]
    assert all(r["conf"]["prevResult"] == result for r in records)


def test_check_refused_before_0_4_0_and_skipped_by_disable_check(
    runtime: Runtime, calls: Calls
) -> None:
    with pytest.raises(ConflistError, match="does not support the CHECK command"):
        runtime.check(conflist("0.3.1"), RT)
    runtime.check(conflist("1.0.0", disableCheck=True), RT)
    runtime.check(conflist("1.0.0", disableCheck="true"), RT)
    assert calls() == []


def test_del_reverse_order_with_prev_result_then_uncached(runtime: Runtime, calls: Calls) -> None:
    result = runtime.add(conflist(), RT)
    calls()
    runtime.delete(conflist(), RT)
    records = calls()
    assert seen(records) == [("DEL", "fake-c"), ("DEL", "fake-b"), ("DEL", "fake-a")]
    assert all(r["conf"]["prevResult"] == result for r in records)
    assert runtime.cache_entry("net1", RT) is None
    runtime.delete(conflist(), RT)  # a second DEL has no cached result to pass
    assert all("prevResult" not in r["conf"] for r in calls())


def test_del_before_0_4_0_has_no_prev_result_and_keeps_cache(
    runtime: Runtime, calls: Calls
) -> None:
    runtime.add(conflist("0.3.1"), RT)
    calls()
    runtime.delete(conflist("0.3.1"), RT)
    assert all("prevResult" not in r["conf"] for r in calls())
    assert runtime.cache_entry("net1", RT) is not None  # libcni removes it only if it used it


def test_del_stops_at_first_error_and_keeps_cache(runtime: Runtime, calls: Calls) -> None:
    failing = {"type": "fake-b", "fail": {"DEL": {"code": 11, "msg": "busy", "details": "d"}}}
    conf = conflist("1.0.0", {"type": "fake-a"}, failing, {"type": "fake-c"})
    runtime.add(conf, RT)
    calls()
    with pytest.raises(PluginError) as info:
        runtime.delete(conf, RT)
    assert (info.value.code, info.value.msg, info.value.details) == (11, "busy", "d")
    assert info.value.plugin == "fake-b"
    assert seen(calls()) == [("DEL", "fake-c"), ("DEL", "fake-b")]
    assert runtime.cache_entry("net1", RT) is not None


def test_failed_add_is_cleaned_up_with_a_list_del(runtime: Runtime, calls: Calls) -> None:
    failing = {"type": "fake-b", "fail": {"ADD": {"code": 7, "msg": "bad config"}}}
    conf = conflist("1.0.0", {"type": "fake-a"}, failing, {"type": "fake-c"})
    with pytest.raises(PluginError, match="bad config"):
        runtime.add(conf, RT)
    records = calls()
    assert seen(records) == [
        ("ADD", "fake-a"),
        ("ADD", "fake-b"),
        ("DEL", "fake-c"),
        ("DEL", "fake-b"),
        ("DEL", "fake-a"),
    ]
    assert all("prevResult" not in r["conf"] for r in records[2:])
    assert runtime.cache_entry("net1", RT) is None


def test_failed_add_without_cleanup_is_bare_libcni(
    plugin_dir: Path, tmp_path: Path, calls: Calls
) -> None:
    runtime = Runtime([str(plugin_dir)], str(tmp_path / "cache"), cleanup_on_add_failure=False)
    failing = {"type": "fake-b", "fail": {"ADD": {"code": 7, "msg": "bad config"}}}
    with pytest.raises(PluginError):
        runtime.add(conflist("1.0.0", {"type": "fake-a"}, failing), RT)
    assert seen(calls()) == [("ADD", "fake-a"), ("ADD", "fake-b")]


def test_add_validates_attachment_first(runtime: Runtime, calls: Calls) -> None:
    for rt in (
        RuntimeConf("-bad", "/x"),
        RuntimeConf("c1", "/x", "a/b"),
        RuntimeConf("c", "/x", "x" * 16),
    ):
        with pytest.raises(ConflistError):
            runtime.add(conflist(), rt)
    assert calls() == []


def gc_setup(runtime: Runtime, calls: Calls, version: str = "1.1.0", **top: Any) -> ConfList:
    conf = conflist(version, {"type": "fake-a"}, {"type": "fake-b"}, **top)
    runtime.add(conf, RuntimeConf("c1", "/run/netns/n1", "eth0"))
    runtime.add(conf, RuntimeConf("c2", "/run/netns/n2", "eth0", "K=2", {"portMappings": [2]}))
    runtime.add(conf, RuntimeConf("c1", "/run/netns/n1", "eth1"))
    runtime.add(conflist(version, name="other"), RuntimeConf("c9", "/run/netns/n9"))
    calls()
    return conf


def test_gc_deletes_stale_attachments_then_sends_gc(runtime: Runtime, calls: Calls) -> None:
    conf = gc_setup(runtime, calls)
    runtime.gc(conf, [("c1", "eth0")])
    records = calls()
    assert seen(records) == [
        ("DEL", "fake-b"),
        ("DEL", "fake-a"),
        ("DEL", "fake-b"),
        ("DEL", "fake-a"),
        ("GC", "fake-a"),
        ("GC", "fake-b"),
    ]
    # Synthesized DELs (sorted by cache file name) carry the cached netns, args and capabilities.
    c1_eth1, c2_eth0 = records[0], records[2]
    assert (c1_eth1["env"]["CNI_CONTAINERID"], c1_eth1["env"]["CNI_IFNAME"]) == ("c1", "eth1")
    assert c2_eth0["env"]["CNI_NETNS"] == "/run/netns/n2"
    assert c2_eth0["env"]["CNI_ARGS"] == "K=2"
    assert c2_eth0["conf"]["prevResult"]["interfaces"][0]["name"] == "fake-a"
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    for gc in records[4:]:
        assert gc["conf"]["cni.dev/valid-attachments"] == valid
        assert gc["conf"]["cni.dev/attachments"] == valid
        assert gc["conf"]["name"] == "net1" and "prevResult" not in gc["conf"]
        ignored = ("PATH", "CNI_BRIDGE_STATE_DIR")
        assert {k: v for k, v in gc["env"].items() if k not in ignored and v} == {
            "CNI_COMMAND": "GC",
            "CNI_PATH": gc["env"]["CNI_PATH"],
        }
    assert runtime.cache_entry("net1", RuntimeConf("c1", ifname="eth0")) is not None
    assert runtime.cache_entry("net1", RuntimeConf("c2", ifname="eth0")) is None
    assert runtime.cache_entry("other", RuntimeConf("c9", ifname="eth0")) is not None


def test_gc_below_1_1_0_only_deletes(runtime: Runtime, calls: Calls) -> None:
    conf = gc_setup(runtime, calls, "1.0.0")
    runtime.gc(conf, [])
    assert {cmd for cmd, _ in seen(calls())} == {"DEL"}


def test_gc_disabled(runtime: Runtime, calls: Calls) -> None:
    conf = gc_setup(runtime, calls, disableGC=True)
    runtime.gc(conf, [])
    assert calls() == []


def test_gc_without_valid_list_sends_no_keys_and_collects_errors(
    runtime: Runtime, calls: Calls
) -> None:
    failing = {"type": "fake-a", "fail": {"GC": {"code": 999, "msg": "gc broke"}}}
    conf = conflist("1.1.0", failing, {"type": "fake-b"})
    with pytest.raises(ExceptionGroup) as info:
        runtime.gc(conf, None)  # no cache directory yet: plugins are still asked
    [error] = info.value.exceptions
    assert isinstance(error, PluginError) and error.msg == "gc broke"
    records = calls()
    assert seen(records) == [("GC", "fake-a"), ("GC", "fake-b")]
    assert "cni.dev/valid-attachments" not in records[1]["conf"]


def test_status_in_order_stops_at_first_error(runtime: Runtime, calls: Calls) -> None:
    failing = {"type": "fake-b", "fail": {"STATUS": {"code": 50, "msg": "not ready"}}}
    conf = conflist("1.1.0", {"type": "fake-a"}, failing, {"type": "fake-c"})
    with pytest.raises(PluginError) as info:
        runtime.status(conf)
    assert info.value.code == 50
    assert seen(calls()) == [("STATUS", "fake-a"), ("STATUS", "fake-b")]
    runtime.status(conflist("1.0.0"))
    assert calls() == []


def test_plugin_lookup_in_directory_order(plugin_dir: Path, tmp_path: Path, calls: Calls) -> None:
    first = tmp_path / "first"
    first.mkdir()
    (first / "fake-a").symlink_to(plugin_dir / "fake-b")  # named fake-b in the log
    runtime = Runtime([str(first), str(plugin_dir)], str(tmp_path / "cache"))
    runtime.add(conflist("1.0.0", {"type": "fake-a"}, {"type": "fake-c"}), RT)
    records = calls()
    assert [r["plugin"] for r in records] == ["fake-a", "fake-c"]
    assert records[0]["env"]["CNI_PATH"] == f"{first}:{plugin_dir}"
    assert runtime.calls[0].plugin == "fake-a"
    with pytest.raises(ConflistError, match="failed to find plugin"):
        runtime.add(conflist("1.0.0", {"type": "missing"}), RT)


def test_error_without_json_is_reported_like_libcni(runtime: Runtime) -> None:
    with pytest.raises(PluginError) as info:
        runtime.status(conflist("1.1.0", {"type": "fake-a", "garbage": "oops"}))
    assert info.value.code == 0
    assert "error parsing its diagnostic message" in info.value.msg


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.0.0"]}, "1.0.0"),
        ({"cniVersions": ["0.3.1", "1.1.0"]}, "1.1.0"),
        ({"cniVersion": "1.0.0"}, "1.0.0"),
    ],
)
def test_version_selection(top: dict[str, Any], expected: str) -> None:
    doc = {"name": "n", "plugins": [{"type": "t"}], **top}
    assert parse_conflist(doc).cni_version == expected


@pytest.mark.parametrize(
    "doc",
    [{"plugins": [{"type": "t"}]}, {"name": "n", "plugins": []}, {"name": "n", "plugins": [{}]}],
)
def test_invalid_conflists(doc: dict[str, Any]) -> None:
    with pytest.raises(ConflistError):
        parse_conflist(doc)


def test_cli_round_trip(plugin_dir: Path, tmp_path: Path, calls: Calls) -> None:
    conf_file = tmp_path / "net.conflist"
    conf_file.write_text(
        json.dumps({"cniVersion": "1.1.0", "name": "net1", "plugins": [{"type": "fake-a"}]})
    )
    common = ["--conflist", str(conf_file), "--cache", str(tmp_path / "cache")]
    common += ["--plugin-dir", str(plugin_dir), "--netns", "/x", "--id", "c1"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(RUNNER), *args, *common]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    added = cli("add", "--cap", '{"portMappings": []}', "--args", "A=1")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["interfaces"] == [{"name": "fake-a"}]
    assert cli("check").returncode == 0
    assert cli("status").stdout == ""
    gc = cli("gc", "--valid", "c1/eth0")
    assert gc.returncode == 0, gc.stderr
    assert cli("del").returncode == 0
    assert seen(calls()) == [
        ("ADD", "fake-a"),
        ("CHECK", "fake-a"),
        ("STATUS", "fake-a"),
        ("GC", "fake-a"),
        ("DEL", "fake-a"),
    ]
    conf_file.write_text(
        json.dumps(
            {
                "cniVersion": "1.1.0",
                "name": "net1",
                "plugins": [{"type": "fake-a", "fail": {"ADD": {"code": 11, "msg": "later"}}}],
            }
        )
    )
    failed = cli("add")
    assert failed.returncode == 1
    assert json.loads(failed.stdout) == {
        "code": 11,
        "msg": "later",
        "details": "",
        "plugin": "fake-a",
    }
    assert cli("gc", "--valid", "no-slash").returncode == 2
