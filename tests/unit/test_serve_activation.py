"""Socket activation (the LISTEN_FDS protocol, sd_listen_fds(3)) and the units that use it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.deploy import units
from cni_bridge.serve.server import listener

DEPLOY = Path(__file__).resolve().parents[2] / "conf" / "deploy" / "systemd"


def test_activation_is_for_the_process_systemd_named() -> None:
    assert listener.activation({}, 42) is None
    assert listener.activation({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42) is None
    assert listener.activation({"LISTEN_PID": "42", "LISTEN_FDS": "1",
                                "LISTEN_FDNAMES": "cni-bridge.socket"}, 42) == 3


@pytest.mark.parametrize("count", ["0", "2", "", "x"])
def test_activation_takes_exactly_one_socket(count: str) -> None:
    with pytest.raises(listener.ServeError, match="exactly one socket"):
        listener.activation({"LISTEN_PID": "42", "LISTEN_FDS": count}, 42)


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A listening unix socket's descriptor (a dup the test may hand over) and its path."""
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen(4)
        yield os.dup(s.fileno()), path


def test_the_inherited_socket_is_taken_non_blocking_and_close_on_exec(
        listening: tuple[int, str]) -> None:
    fd, path = listening
    os.set_inheritable(fd, True)  # as systemd passes it
    with listener.inherited(fd, path) as sock:
        assert sock.fileno() == fd
        assert not sock.getblocking()
        assert not os.get_inheritable(fd)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            conn, _ = sock.accept()
            conn.close()


def test_an_inherited_socket_bound_elsewhere_is_refused_and_left_open(
        listening: tuple[int, str]) -> None:
    fd, path = listening
    with pytest.raises(listener.ServeError, match="not /elsewhere.sock"):
        listener.inherited(fd, "/elsewhere.sock")
    os.fstat(fd)  # not closed: the descriptor is systemd's
    os.close(fd)


def test_what_is_not_a_listening_unix_stream_socket_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound_only, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        bound_only.bind(path)
        for sock in (bound_only, datagram):
            with pytest.raises(listener.ServeError, match="not a listening unix stream"):
                listener.inherited(os.dup(sock.fileno()), path)
    r, w = os.pipe()
    with pytest.raises(listener.ServeError, match="not a socket"):
        listener.inherited(r, path)
    os.close(r)
    os.close(w)


def test_taking_the_socket_clears_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("LISTEN_PID", "1"), ("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "x")):
        monkeypatch.setenv(name, value)
    assert listener.take_activated("/x.sock") is None  # pid 1's, not ours
    assert not any(name in os.environ for name in listener.ACTIVATION_ENV)


def test_systemds_socket_file_is_never_removed(listening: tuple[int, str]) -> None:
    fd, path = listening
    os.close(fd)
    listener.remove(path, None)
    assert os.path.exists(path)
    listener.remove(path, listener.identity(path))
    assert not os.path.exists(path)


# --- the units ------------------------------------------------------------------------------

def settings(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def test_the_shipped_units_are_those_install_writes_for_opt_cni_bin() -> None:
    for name, text in units.render("/opt/cni/bin/cni-bridge").items():
        assert (DEPLOY / name).read_text() == text, name


def test_the_socket_is_private_to_root_and_starts_the_service() -> None:
    rendered = units.render("/x/cni-bridge", "/run/other.sock")
    sock, service = (settings(rendered[n]) for n in (units.SOCKET_UNIT, units.SERVICE_UNIT))
    assert sock["ListenStream"] == "/run/other.sock"
    assert (sock["SocketMode"], sock["SocketUser"], sock["DirectoryMode"]) == \
        ("0600", "root", "0700")
    assert sock["Service"] == units.SERVICE_UNIT
    assert service["Requires"] == service["After"] == units.SOCKET_UNIT
    assert service["ExecStart"] == "/x/cni-bridge serve --socket /run/other.sock"
    assert service["Type"] == "notify"


def test_without_systemd_nothing_is_planned_unless_a_directory_is_given(tmp_path: Path) -> None:
    with pytest.raises(units.UnitsError, match="systemd is not running"):
        units.plan(None, tmp_path / "missing")
    assert units.plan(tmp_path, tmp_path / "missing") == (tmp_path, False)
    assert units.plan(None, tmp_path) == (units.SYSTEM_UNIT_DIR, True)


def test_units_are_written_whole_and_reported(tmp_path: Path) -> None:
    texts = units.render("/a/cni-bridge")
    first = units.write_units(tmp_path, texts)
    assert set(first.values()) == {"written"}
    (tmp_path / units.SERVICE_UNIT).write_text("old")
    again = units.write_units(tmp_path, texts)
    assert again == {tmp_path / units.SOCKET_UNIT: "unchanged",
                     tmp_path / units.SERVICE_UNIT: "replaced"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(texts)  # no temp file left


class Systemctl:
    """Records the commands it is given (no systemd runs where unit tests run)."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def __call__(self, argv: tuple[str, ...], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(tuple(argv))
        code = 1 if self.fail and self.fail in argv else 0
        return subprocess.CompletedProcess(argv, code, "", "boom" if code else "")


def test_where_systemd_runs_the_socket_is_enabled(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "SYSTEM_UNIT_DIR", tmp_path)
    systemctl = Systemctl()
    report = units.install_units("/a/cni-bridge", tmp_path, True, systemctl)
    assert report.enabled and report.next_step is None
    assert systemctl.calls == [("systemctl", "daemon-reload"),
                               ("systemctl", "enable", "--now", "cni-bridge.socket")]
    with pytest.raises(units.UnitsError, match="enable --now cni-bridge.socket failed.*boom"):
        units.install_units("/a/cni-bridge", tmp_path, True, Systemctl(fail="enable"))


def test_elsewhere_the_report_says_how_to_enable(tmp_path: Path) -> None:
    systemctl = Systemctl()
    report = units.install_units("/a/cni-bridge", tmp_path, False, systemctl)
    assert not report.enabled and systemctl.calls == []
    assert report.next_step is not None and "enable --now cni-bridge.socket" in report.next_step
