"""The process edge: role from argv[0], the operator CLI, and a plugin run through real stdio."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cni_bridge
from cni_bridge import __version__, call
from cni_bridge import entry as cli
from cni_bridge.admin import main as operator
from cni_bridge.cni import dispatch as dispatch_mod

VERSION_LINE = (
    '{"cniVersion":"1.1.0","supportedVersions":'
    '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv0", "role"),
    [
        ("bridge", "bridge"),
        ("host-local", "host-local"),
        ("portmap", "portmap"),
        ("/opt/cni/bin/bridge", "bridge"),
        ("/usr/lib/cni/host-local", "host-local"),
        ("./portmap", "portmap"),
        ("cni-bridge", "cni-bridge"),
        ("/usr/local/bin/cni-bridge", "cni-bridge"),
        ("", "cni-bridge"),
        ("Bridge", "cni-bridge"),
        ("bridge.py", "cni-bridge"),
        ("/opt/cni/bin/bridge/", "cni-bridge"),
        ("macvlan", "cni-bridge"),
        ("python3", "cni-bridge"),
    ],
)
def test_role_from_argv0(argv0: str, role: str) -> None:
    assert cli.role_from_argv0(argv0) == role


def test_operator_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        operator.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cni-bridge")
    assert "'bridge'" in out and "'host-local'" in out and "'portmap'" in out


def test_operator_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["version"]) == 0
    assert capsys.readouterr().out == (
        f"cni-bridge {__version__}\n"
        "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
    )


def test_operator_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main([]) == 0
    assert "usage: cni-bridge" in capsys.readouterr().out


def test_operator_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        operator.main(["frobnicate"])
    assert info.value.code == 2


def test_main_under_own_name_runs_the_operator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["/usr/local/bin/cni-bridge", "version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("cni-bridge ")


@pytest.mark.parametrize("argv0", ["/opt/cni/bin/bridge", "host-local", "portmap"])
def test_main_under_a_plugin_name_runs_that_plugin(
    argv0: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles: list[str] = []

    def fake_run_plugin(role: str) -> int:
        roles.append(role)
        return 3

    monkeypatch.setattr(call, "run_plugin", fake_run_plugin)
    with pytest.raises(SystemExit) as info:
        cli.main([argv0, "ignored"])
    assert info.value.code == 3
    assert roles == [os.path.basename(argv0)]


# ------------------------------------------------------------------ run_plugin, in process

@pytest.fixture
def cni_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CNI_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_run_plugin_version(
    cni_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cni_env.setenv("CNI_COMMAND", "VERSION")
    assert call.run_plugin("bridge") == 0
    assert capsys.readouterr().out == VERSION_LINE


def test_run_plugin_about(cni_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert call.run_plugin("portmap") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("CNI portmap plugin")


def test_run_plugin_error_and_call_log(
    cni_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    cni_env.setenv("CNI_COMMAND", "ADD")
    cni_env.setenv("CNI_BRIDGE_LOG", str(log))
    assert call.run_plugin("host-local") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["code"] == 4
    record = json.loads(log.read_text())
    assert (record["role"], record["verb"], record["code"]) == ("host-local", "ADD", 4)


def test_run_plugin_reads_at_most_one_byte_over_the_limit(
    cni_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in (("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/n"),
                        ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/p")):
        cni_env.setenv(name, value)
    cni_env.setattr(cni_bridge, "MAX_STDIN", 100)  # what the call reads
    cni_env.setattr(dispatch_mod, "MAX_STDIN", 100)  # what the dispatcher refuses
    data = io.BytesIO(b" " * 10_000)
    cni_env.setattr(sys, "stdin", io.TextIOWrapper(data))
    assert call.run_plugin("bridge") == 1
    assert json.loads(capsys.readouterr().out)["code"] == 5
    assert data.tell() == 101


# ------------------------------------------------------------------ the real process

def run_as(
    argv0: str, env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    code = f"import sys; sys.argv[0] = {argv0!r}; from cni_bridge.entry import main; main()"
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", code], input=stdin, env=base | env,
                          capture_output=True, timeout=30, check=False)


def test_process_version_and_bad_stdin() -> None:
    proc = run_as("/opt/cni/bin/bridge", {"CNI_COMMAND": "VERSION"})
    assert (proc.returncode, proc.stdout.decode()) == (0, VERSION_LINE)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/p", "LANG": "C", "LC_ALL": "C"}
    proc = run_as("bridge", env, b"{oops")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["code"] == 6
    assert not proc.stdout.endswith(b"\n")
