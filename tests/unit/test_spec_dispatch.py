"""The dispatcher end to end, with a fake plugin: env + stdin in, one JSON document out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_bridge.cni import dispatch as dispatch_mod
from cni_bridge.cni.dispatch import Outcome, dispatch, version_json
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPConfig, Result, Route, render_result

ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
VERSION_LINE = (
    '{"cniVersion":"1.1.0","supportedVersions":'
    '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)
RESULT = Result(
    ips=(IPConfig(ip_interface("10.0.0.5/24"), None, None),),
    routes=(Route(ip_network("0.0.0.0/0")),),
)


@dataclass
class FakePlugin:
    result: Result = RESULT
    raises: BaseException | None = None
    calls: list[tuple[str, Request]] = field(default_factory=list)

    def _call(self, verb: str, req: Request) -> None:
        self.calls.append((verb, req))
        if self.raises is not None:
            raise self.raises

    def add(self, req: Request) -> Result:
        self._call("add", req)
        return self.result

    def delete(self, req: Request) -> None:
        self._call("delete", req)

    def check(self, req: Request) -> None:
        self._call("check", req)

    def gc(self, req: Request) -> None:
        self._call("gc", req)

    def status(self, req: Request) -> None:
        self._call("status", req)


def env_for(command: str, **extra: str) -> dict[str, str]:
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": "/var/run/netns/ctr1",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    base.update(extra)
    return base


def conf(version: str | None = "1.1.0", **extra: Any) -> bytes:
    obj: dict[str, Any] = {"name": "mynet", "type": "bridge"}
    if version is not None:
        obj["cniVersion"] = version
    obj.update(extra)
    return json.dumps(obj).encode()


def run(
    environ: Mapping[str, str],
    stdin: bytes | Callable[[], bytes] = b"",
    plugin: FakePlugin | None = None,
) -> Outcome:
    read = stdin if callable(stdin) else (lambda: stdin)
    fake = plugin if plugin is not None else FakePlugin()
    return dispatch("bridge", "9.9.9", environ, read, lambda: fake)


def error_json(out: Outcome) -> dict[str, Any]:
    """The error document: exactly one JSON object, 4-space indented, no trailing newline."""
    assert out.exit_code == 1
    assert not out.stdout.endswith("\n")
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict) and set(doc) <= {"code", "msg", "details"}
    assert out.stdout == json.dumps(doc, indent=4, ensure_ascii=False).replace("<", "\\u003c") \
        .replace(">", "\\u003e").replace("&", "\\u0026")
    return doc


def never_read() -> bytes:
    raise AssertionError("stdin must not be read")


# ------------------------------------------------------------------ no command, VERSION

def test_no_command_prints_about_on_stderr_and_exits_0() -> None:
    plugin = FakePlugin()
    out = run({}, never_read, plugin)
    assert (out.stdout, out.exit_code, out.error) == ("", 0, None)
    assert out.stderr.startswith("CNI bridge plugin")
    assert "9.9.9" in out.stderr
    assert out.stderr.endswith(
        "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
    )
    assert plugin.calls == []


def test_empty_command_is_the_same_as_none() -> None:
    out = run({"CNI_COMMAND": "", "CNI_CONTAINERID": "x y"}, never_read)
    assert (out.stdout, out.exit_code) == ("", 0)
    assert "CNI protocol versions supported" in out.stderr


def test_version_never_reads_stdin_and_prints_one_compact_line() -> None:
    out = run({"CNI_COMMAND": "VERSION"}, never_read)
    assert (out.stdout, out.exit_code, out.stderr) == (VERSION_LINE, 0, "")
    assert version_json() == VERSION_LINE


def test_version_probe_as_libcni_sends_it() -> None:
    environ = {"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy",
               "CNI_PATH": "dummy", "CNI_CONTAINERID": "bad id!"}
    assert run(environ, never_read).stdout == VERSION_LINE


# ------------------------------------------------------------------ env and verb errors

def test_missing_env_is_code_4_before_stdin_is_read() -> None:
    doc = error_json(run({"CNI_COMMAND": "ADD"}, never_read))
    assert doc == {"code": 4, "msg": "required env variables "
                   "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"}


def test_bad_container_id_is_code_4_before_stdin_is_read() -> None:
    doc = error_json(run(env_for("ADD", CNI_CONTAINERID="a b"), never_read))
    assert doc == {"code": 4, "msg": "invalid characters in containerID", "details": "a b"}


def test_bad_ifname_is_code_4_even_with_bad_json() -> None:
    doc = error_json(run(env_for("DEL", CNI_IFNAME="x" * 16), b"{not json"))
    assert doc["code"] == 4 and doc["msg"] == "interface name is too long"


def test_unknown_command_is_code_4() -> None:
    doc = error_json(run(env_for("FROB"), conf()))
    assert doc == {"code": 4, "msg": "unknown CNI_COMMAND: FROB"}


def test_unknown_command_with_bad_stdin_is_a_decoding_error_first() -> None:
    assert error_json(run(env_for("FROB"), b"nope"))["code"] == 6


def test_lowercase_verb_is_unknown() -> None:
    assert error_json(run(env_for("add"), conf()))["msg"] == "unknown CNI_COMMAND: add"


# ------------------------------------------------------------------ stdin decoding

@pytest.mark.parametrize(
    "stdin",
    [b"", b"   ", b"{", b"{}}", b"nope", b"[]", b'"str"', b"5", b"true",
     b'{"name": "n", "x": NaN}', b'{"name": "n", "x": -Infinity}', b"\xff\xfe\xfd",
     b'{"name": "n"} {"name": "m"}', b'{"name": "n", "cniVersion": 1}'],
)
def test_undecodable_stdin_is_code_6(stdin: bytes) -> None:
    plugin = FakePlugin()
    assert error_json(run(env_for("ADD"), stdin, plugin))["code"] == 6
    assert plugin.calls == []


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deeply_nested_json_is_code_6_not_a_crash(depth: int) -> None:
    stdin = b'{"name": "n", "x": ' + b"[" * depth + b"]" * depth + b"}"
    doc = error_json(run(env_for("ADD"), stdin))
    assert doc["code"] == 6 and "recursion" in doc["msg"]


def test_huge_stdin_is_refused_with_code_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_mod, "MAX_STDIN", 1024)
    stdin = conf(extra="x" * 2000)
    assert error_json(run(env_for("ADD"), stdin))["code"] == 5


def test_stdin_read_failure_is_code_5() -> None:
    def broken() -> bytes:
        raise OSError(5, "Input/output error")

    doc = error_json(run(env_for("ADD"), broken))
    assert doc["code"] == 5 and doc["msg"].startswith("error reading from stdin")


@pytest.mark.parametrize(
    ("stdin", "msg"),
    [(b"null", "missing network name"), (b"{}", "missing network name"),
     (b'{"name": ""}', "missing network name"),
     (b'{"name": "bad name"}', "invalid characters found in network name"),
     (b'{"name": "net\\n"}', "invalid characters found in network name")],
)
def test_bad_network_name_is_code_7(stdin: bytes, msg: str) -> None:
    doc = error_json(run(env_for("ADD"), stdin))
    assert (doc["code"], doc["msg"]) == (7, msg)


# ------------------------------------------------------------------ version gates

@pytest.mark.parametrize(
    ("command", "version", "code"),
    [("CHECK", "0.3.1", 1), ("CHECK", None, 1), ("CHECK", "zz", 6), ("CHECK", "2.0.0", 1),
     ("GC", "1.0.0", 1), ("STATUS", "1.0.0", 1), ("STATUS", "1.1.0.1", 6),
     ("ADD", "1.2.0", 1), ("ADD", "zz", 1), ("DEL", "0.9.0", 1)],
)
def test_version_gates(command: str, version: str | None, code: int) -> None:
    plugin = FakePlugin()
    extra: dict[str, Any] = {"cni.dev/valid-attachments": []} if command == "GC" else {}
    assert error_json(run(env_for(command), conf(version, **extra), plugin))["code"] == code
    assert plugin.calls == []


def test_unsupported_version_names_the_versions() -> None:
    doc = error_json(run(env_for("ADD"), conf("1.2.0")))
    assert doc["msg"] == "incompatible CNI versions"
    assert doc["details"].startswith('config is "1.2.0", plugin supports ["0.1.0" ')


@pytest.mark.parametrize("version", [None, ""])
def test_missing_or_null_version_means_0_1_0(version: str | None) -> None:
    plugin = FakePlugin()
    stdin = conf(None) if version is None else conf(None, cniVersion=None)
    out = run(env_for("ADD"), stdin, plugin)
    assert out.exit_code == 0
    assert plugin.calls[0][1].cni_version == "0.1.0"
    assert json.loads(out.stdout)["ip4"] == {"ip": "10.0.0.5/24", "routes": [{"dst": "0.0.0.0/0"}]}


# ------------------------------------------------------------------ calling the plugin

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_add_result_is_rendered_in_the_request_version(version: str) -> None:
    out = run(env_for("ADD"), conf(version))
    assert (out.exit_code, out.error) == (0, None)
    assert out.stdout == render_result(RESULT, version)
    doc = json.loads(out.stdout)
    assert doc["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert "ip4" in doc and "ips" not in doc
    elif version.startswith("0."):
        assert doc["ips"][0]["version"] == "4" and doc["dns"] == {}
    else:
        assert "version" not in doc["ips"][0] and "dns" not in doc


@pytest.mark.parametrize(
    ("command", "method", "version"),
    [("DEL", "delete", "0.1.0"), ("CHECK", "check", "0.4.0"), ("GC", "gc", "1.1.0"),
     ("STATUS", "status", "1.1.0")],
)
def test_other_verbs_print_nothing_on_success(command: str, method: str, version: str) -> None:
    plugin = FakePlugin()
    env = env_for(command)
    if command in ("GC", "STATUS"):
        env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    extra = {"cni.dev/valid-attachments": [{"containerID": "c", "ifname": "eth0"}]}
    out = run(env, conf(version, **(extra if command == "GC" else {})), plugin)
    assert (out.stdout, out.exit_code) == ("", 0)
    assert [c[0] for c in plugin.calls] == [method]
    req = plugin.calls[0][1]
    assert (req.network_name, req.cni_version) == ("mynet", version)


def test_add_without_ip_at_0_2_0_cannot_convert() -> None:
    out = run(env_for("ADD"), conf("0.2.0"), FakePlugin(result=Result()))
    doc = error_json(out)
    assert doc["code"] == 999 and doc["msg"] == "cannot convert: no valid IP addresses"


def test_plugin_cni_error_keeps_its_code() -> None:
    plugin = FakePlugin(raises=CniError("lock busy", "try later", code=11))
    doc = error_json(run(env_for("ADD"), conf(), plugin))
    assert doc == {"code": 11, "msg": "lock busy", "details": "try later"}


def test_plugin_crash_is_999_with_the_failure_named_and_no_traceback_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = FakePlugin(raises=RuntimeError("boom"))
    out = run(env_for("DEL"), conf(), plugin)
    doc = error_json(out)
    assert doc["code"] == 999
    assert "RuntimeError" in doc["msg"] and "boom" in doc["msg"] and "DEL" in doc["msg"]
    assert "Traceback" not in out.stdout
    err = capsys.readouterr().err  # the traceback goes to stderr only
    assert "cni-bridge ERROR: unexpected failure in bridge DEL" in err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_error_message_escapes_like_go() -> None:
    plugin = FakePlugin(raises=CniError("a <b> & c", "é"))
    out = run(env_for("ADD"), conf(), plugin)
    assert '"msg": "a \\u003cb\\u003e \\u0026 c"' in out.stdout
    assert '"details": "é"' in out.stdout


def test_gc_without_valid_attachments_is_code_7() -> None:
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}
    plugin = FakePlugin()
    assert error_json(run(env, conf("1.1.0"), plugin))["code"] == 7
    assert error_json(run(env, conf("1.1.0", **{"cni.dev/valid-attachments": {}})))["code"] == 7
    assert plugin.calls == []


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_accepts_either_attachment_key(key: str) -> None:
    plugin = FakePlugin()
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}
    out = run(env, conf("1.1.0", **{key: [{"containerID": "c1", "ifname": "eth0"}]}), plugin)
    assert out.exit_code == 0
    assert plugin.calls[0][1].valid_attachments() == frozenset({("c1", "eth0")})


# ------------------------------------------------------------------ prevResult

def prev_result_in(version: str) -> dict[str, Any]:
    if version in ("0.1.0", "0.2.0"):
        return {"cniVersion": version, "ip4": {"ip": "10.1.0.7/16", "gateway": "10.1.0.1"}}
    ip: dict[str, Any] = {"interface": 0, "address": "10.1.0.7/16", "gateway": "10.1.0.1"}
    if version.startswith("0."):
        ip["version"] = "4"
    return {"cniVersion": version, "interfaces": [{"name": "eth0", "sandbox": "/n"}],
            "ips": [ip], "dns": {}}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_prev_result_is_parsed_at_every_version(version: str) -> None:
    plugin = FakePlugin()
    out = run(env_for("ADD"), conf(version, prevResult=prev_result_in(version)), plugin)
    assert out.exit_code == 0, out.stdout
    prev = plugin.calls[0][1].prev_result
    assert prev is not None and prev.cni_version == version
    assert [str(i.address) for i in prev.ips] == ["10.1.0.7/16"]


def test_prev_result_without_version_takes_the_config_version() -> None:
    plugin = FakePlugin()
    prev = prev_result_in("0.4.0")
    del prev["cniVersion"]
    assert run(env_for("CHECK"), conf("0.4.0", prevResult=prev), plugin).exit_code == 0
    assert plugin.calls[0][1].prev_result.cni_version == "0.4.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "prev",
    [[], "x", {"cniVersion": "9.9.9"}, {"ips": [{"address": "10.0.0.1"}]},
     {"ips": [{"address": "10.0.0.1/8", "interface": "0"}]}, {"routes": {"dst": "x"}},
     {"interfaces": [[[[[]]]]]}, {"dns": {"nameservers": [1]}}],
)
def test_bad_prev_result_is_code_6(prev: Any) -> None:
    plugin = FakePlugin()
    doc = error_json(run(env_for("ADD"), conf("1.0.0", prevResult=prev), plugin))
    assert doc["code"] == 6 and doc["msg"].startswith("could not parse prevResult")
    assert plugin.calls == []


# ------------------------------------------------------------------ fuzz: never an exception

CNI_VARS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"]
env_values = st.one_of(
    st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "eth0", "c1", "/p",
                     "x" * 16, ".", "a b", "\udcff"]),
    st.text(max_size=20),
)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10),
                      st.sampled_from(ALL_VERSIONS + ("9.9", "mynet", "10.0.0.1/24")))
json_values = st.recursive(
    json_leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=12,
)
config_objects = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("mynet"), json_leaf),
        "cniVersion": st.one_of(st.sampled_from(ALL_VERSIONS), json_leaf),
        "prevResult": json_values,
        "cni.dev/valid-attachments": json_values,
    },
)
stdins = st.one_of(
    st.binary(max_size=64),
    config_objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda o: json.dumps(o).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(environ=st.dictionaries(st.sampled_from(CNI_VARS), env_values), stdin=stdins,
       crash=st.booleans())
def test_fuzz_dispatch_never_raises_and_prints_one_document(
    environ: dict[str, str], stdin: bytes, crash: bool
) -> None:
    plugin = FakePlugin(raises=RuntimeError("boom") if crash else None)
    out = run(environ, stdin, plugin)
    if out.stdout in ("", VERSION_LINE):
        assert out.exit_code == 0
        return
    doc = json.loads(out.stdout)  # exactly one JSON document (raises on trailing data)
    assert isinstance(doc, dict)
    if out.exit_code:
        assert isinstance(doc["code"], int) and isinstance(doc["msg"], str)
    else:
        assert environ["CNI_COMMAND"] == "ADD" and "cniVersion" in doc
