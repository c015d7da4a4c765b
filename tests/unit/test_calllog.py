"""The operator's JSON-lines call log."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cni_bridge import call as calllog
from cni_bridge.cni.dispatch import Outcome, dispatch
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request

ENV = {
    "CNI_COMMAND": "DEL",
    "CNI_CONTAINERID": "ctr-7",
    "CNI_IFNAME": "eth1",
    "CNI_PATH": "/opt/cni/bin",
}


class Plugin:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def delete(self, req: Request) -> None:
        if self.fail:
            raise CniError("cannot remove veth", "vethabc", code=11)


def call(config: dict[str, Any] | None = None, fail: bool = False,
         environ: dict[str, str] | None = None) -> Outcome:
    body = {"cniVersion": "1.0.0", "name": "podnet", **(config or {})}
    return dispatch("bridge", "0", environ or ENV, lambda: json.dumps(body).encode(),
                    lambda: Plugin(fail))  # type: ignore[arg-type,return-value]


def test_record_of_a_successful_call() -> None:
    started = time.perf_counter()
    record = calllog.call_record("bridge", call(), started)
    assert {k: record[k] for k in ("role", "verb", "container", "ifname", "network", "outcome")} \
        == {"role": "bridge", "verb": "DEL", "container": "ctr-7", "ifname": "eth1",
            "network": "podnet", "outcome": "ok"}
    assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
    assert set(record["phases_ms"]) == {"decode"}
    assert record["modules"] == len(sys.modules)
    assert "code" not in record and "msg" not in record
    assert record["time"]


def test_record_of_a_failed_call_has_code_and_msg() -> None:
    record = calllog.call_record("host-local", call(fail=True), time.perf_counter())
    assert (record["outcome"], record["code"], record["msg"]) == ("error", 11, "cannot remove veth")


def test_record_when_the_env_was_refused() -> None:
    outcome = call(environ={"CNI_COMMAND": "ADD"})
    record = calllog.call_record("bridge", outcome, time.perf_counter())
    assert (record["container"], record["network"], record["code"]) == ("", "", 4)


def test_log_path_env_wins_over_config_key(tmp_path: Path) -> None:
    outcome = call({"logFile": str(tmp_path / "conf.log")})
    env_path = str(tmp_path / "env.log")
    assert calllog.log_path({"CNI_BRIDGE_LOG": env_path}, outcome) == env_path
    assert calllog.log_path({}, outcome) == str(tmp_path / "conf.log")


def test_log_path_is_empty_by_default_or_when_the_key_is_not_a_string() -> None:
    assert calllog.log_path({}, call()) == ""
    assert calllog.log_path({}, call({"logFile": 5})) == ""
    assert calllog.log_path({}, call(environ={"CNI_COMMAND": "ADD"})) == ""


def test_write_appends_one_compact_json_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    first = calllog.call_record("bridge", call(), time.perf_counter())
    second = calllog.call_record("bridge", call(fail=True), time.perf_counter())
    calllog.write_call_log(str(path), first)
    calllog.write_call_log(str(path), second)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert ": " not in lines[0] and ", " not in lines[0]
    assert stat.S_IMODE(path.stat().st_mode) & 0o137 == 0  # rw-r----- at most


@pytest.mark.parametrize("where", ["missing-dir/calls.log", "."])
def test_unwritable_path_only_warns(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / where)
    calllog.write_call_log(path, {"verb": "ADD"})
    assert f"cni-bridge WARNING: cannot write call log {path}" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory_only_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o500)
    try:
        calllog.write_call_log(str(tmp_path / "x.log"), {"verb": "ADD"})
    finally:
        tmp_path.chmod(0o700)
    assert "cannot write call log" in capsys.readouterr().err
