"""The deployment files start the server as the CLI expects, and tell systemd when it is up."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
from pathlib import Path

import pytest

from cni_bridge.admin.parser import build_parser
from cni_bridge.serve.server.main import notify_ready

DEPLOY = Path(__file__).resolve().parents[2] / "conf" / "deploy"


def test_the_systemd_unit_runs_serve_and_keeps_the_records() -> None:
    unit = (DEPLOY / "systemd" / "cni-bridge.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == "/opt/cni/bin/cni-bridge"
    assert build_parser().parse_args(argv[1:]).command == "serve"
    assert settings["Type"] == "notify"  # serve tells systemd when its socket is up
    assert settings["RuntimeDirectory"] == "cni-bridge"
    assert settings["RuntimeDirectoryPreserve"] == "yes"  # the plugins' records live there
    assert settings["KillMode"] == "process"  # calls in flight are not killed at stop


@pytest.mark.parametrize("name", ["cni-bridge-serve.yaml", "cni-bridge-serve.patch.yaml"])
def test_the_daemonset_runs_the_nodes_own_build(name: str) -> None:
    text = (DEPLOY / "kubernetes" / name).read_text()
    for key in ("hostPID", "privileged", *(["hostNetwork"] if "patch" not in name else [])):
        assert re.search(rf"^\s+{key}: true$", text, re.M), key
    commands = [json.loads(m) for m in re.findall(r"command: (\[.*?\])", text, re.S)]
    assert commands, "no command found"
    for command in commands:
        assert command[:5] == ["nsenter", "--target=1", "--mount", "--",
                               "/opt/cni/bin/cni-bridge"]
        opts = build_parser().parse_args(command[5:])
        assert opts.command in ("serve", "status")


def test_notify_ready_tells_systemd_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(path)
        sd.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify_ready()
        assert sd.recv(64) == b"READY=1"
    assert "NOTIFY_SOCKET" not in os.environ  # not inherited by what the server starts
    notify_ready()  # without systemd: nothing to do
