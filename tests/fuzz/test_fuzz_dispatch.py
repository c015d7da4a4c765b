"""The dispatcher under fuzzing, with fake plugins: every role, any environment, any stdin.

Properties: `dispatch` never raises; stdout is one JSON document (or empty for a success without
a result, or the VERSION line) that the CLI can encode; an error is ``{code:int, msg:str}``; no
traceback on stdout; an invalid environment or stdin never reaches the plugin and never succeeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni_bridge.cni.dispatch import MAX_STDIN, Outcome, dispatch
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import DNS, Interface, IPConfig, Result, Route
from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.strategies import (
    ROLES,
    STATS,
    Case,
    Checked,
    ContractError,
    any_case,
    check_output,
    env_values,
    expect_failure,
    invalid_case,
    raw_stdin,
)

VERSION_LINE = (
    '{"cniVersion":"1.1.0","supportedVersions":'
    '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)

RESULTS = (
    Result(),
    Result(ips=(IPConfig(ip_interface("10.0.0.5/24"), None, None),)),
    Result(
        interfaces=(Interface("br0", "aa:bb:cc:dd:ee:ff"), Interface("eth0", sandbox="/x\u2028")),
        ips=(IPConfig(ip_interface("fd00::5/64"), None, 1),
             IPConfig(ip_interface("10.0.0.5/24"), None, 1)),
        routes=(Route(ip_network("0.0.0.0/0"), mtu=1400, table=0),),
        dns=DNS(("10.0.0.1",), "ex<am>ple&", ("a",), ("ndots:5",)),
    ),
    Result(ips=(IPConfig(ip_interface("fd00::5/64")),), dns=DNS(domain="\udcff\x00")),
)

exceptions = st.one_of(
    st.builds(CniError, st.text(min_size=1), st.text(), st.integers(0, 2**32 - 1)),
    st.sampled_from((ValueError("x"), KeyError("k"), TypeError(), RecursionError(),
                     OSError(28, "No space left"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"),
                     ZeroDivisionError(), AttributeError("\udcff"), IndexError())),
)


@dataclass
class FakePlugin:
    """Answers each verb as drawn: a result, the prevResult back, an error, or an exception."""

    behaviour: str
    result: Result
    error: BaseException
    calls: list[str] = field(default_factory=list)

    def _act(self, verb: str, req: Request) -> None:
        self.calls.append(verb)
        if self.behaviour == "raise":
            raise self.error

    def add(self, req: Request) -> Result:
        self._act("add", req)
        if self.behaviour == "prev" and req.prev_result is not None:
            return req.prev_result
        return self.result

    def delete(self, req: Request) -> None:
        self._act("delete", req)

    def check(self, req: Request) -> None:
        self._act("check", req)

    def gc(self, req: Request) -> None:
        self._act("gc", req)

    def status(self, req: Request) -> None:
        self._act("status", req)


fake_plugins = st.builds(
    FakePlugin, st.sampled_from(("ok", "prev", "raise")), st.sampled_from(RESULTS), exceptions
)


def run(case: Case, plugin: Any) -> tuple[Outcome, Checked]:
    """One call through the dispatcher, checked as the CLI would print it."""

    def read_stdin() -> bytes:
        return case.stdin[: MAX_STDIN + 1]

    outcome = dispatch(case.role, "0.0.0-fuzz", case.env, read_stdin, lambda: plugin)
    try:
        stdout = outcome.stdout.encode("utf-8")  # what cli.run_plugin does
    except UnicodeEncodeError as exc:
        STATS.violations["non_json"] += 1
        raise ContractError(f"stdout cannot be encoded: {exc}\n{case.describe()}") from None
    checked = check_output(case, outcome.exit_code, stdout, outcome.stderr)
    STATS.record("dispatch", checked)
    return outcome, checked


@pytest.mark.parametrize("role", ROLES)
@fuzz_settings(200)
@given(case=st.data(), plugin=fake_plugins)
def test_any_input_keeps_the_output_contract(role: str, case: st.DataObject,
                                             plugin: FakePlugin) -> None:
    c = case.draw(any_case(role))
    outcome, checked = run(c, plugin)
    if plugin.calls:
        req = outcome.request
        assert req is not None and c.command in ("ADD", "DEL", "CHECK", "GC", "STATUS")
        if checked.ok and c.command == "ADD":
            assert checked.doc["cniVersion"] == req.cni_version
    if plugin.behaviour == "raise" and plugin.calls:
        assert not checked.ok


@pytest.mark.parametrize("role", ROLES)
@fuzz_settings(150)
@given(case=st.data(), plugin=fake_plugins)
def test_invalid_env_or_stdin_never_reaches_the_plugin(role: str, case: st.DataObject,
                                                       plugin: FakePlugin) -> None:
    c = case.draw(invalid_case(role, config=False))
    _, checked = run(c, plugin)
    expect_failure(c, checked)
    assert plugin.calls == [], f"the plugin was called for an invalid call ({c.why})"
    assert checked.doc["code"] in (1, 3, 4, 5, 6, 7), c.describe()


@fuzz_settings(100)
@given(role=st.sampled_from(ROLES), stdin=raw_stdin(b'{"cniVersion":"1.1.0","name":"n"}'),
       extra=st.dictionaries(st.sampled_from(("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                                              "CNI_ARGS", "CNI_PATH")), env_values))
def test_version_ignores_stdin_and_other_variables(role: str, stdin: bytes,
                                                   extra: dict[str, str]) -> None:
    plugin = FakePlugin("ok", RESULTS[0], ValueError())
    c = Case(role, {"CNI_COMMAND": "VERSION", **extra}, stdin)
    outcome, checked = run(c, plugin)
    if checked.ok:
        assert outcome.stdout == VERSION_LINE
    else:  # only an invalid container ID / ifname beats VERSION (skel's order)
        assert checked.doc["code"] in (3, 4)
    assert plugin.calls == []


@fuzz_settings(30)
@given(role=st.sampled_from(ROLES), stdin=st.binary(max_size=64),
       extra=st.dictionaries(st.sampled_from(("CNI_CONTAINERID", "CNI_IFNAME")), env_values))
def test_no_command_prints_about_on_stderr_only(role: str, stdin: bytes,
                                                extra: dict[str, str]) -> None:
    c = Case(role, {"CNI_COMMAND": "", **extra}, stdin)
    outcome, _ = run(c, FakePlugin("ok", RESULTS[0], ValueError()))
    assert outcome.exit_code == 0 and outcome.stdout == ""
    assert outcome.stderr.startswith(f"CNI {role} plugin")


def test_huge_stdin_is_refused_without_reading_it_all() -> None:
    size = 17 * 1024 * 1024
    config = b'{"cniVersion":"1.1.0","name":"n","pad":"' + b"x" * size + b'"}'
    reads: list[int] = []

    def read_stdin() -> bytes:
        reads.append(MAX_STDIN + 1)
        return config[: MAX_STDIN + 1]

    plugin = FakePlugin("ok", RESULTS[1], ValueError())
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/x"}
    outcome = dispatch("bridge", "0", env, read_stdin, lambda: plugin)
    STATS.record("dispatch")
    assert outcome.exit_code == 1 and plugin.calls == []
    assert json.loads(outcome.stdout)["code"] == 5
