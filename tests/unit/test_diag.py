"""Diagnostics on stderr without the logging module."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from cni_bridge import diag


@pytest.fixture(autouse=True)
def default_level() -> Iterator[None]:
    yield
    diag.configure({})


def test_warnings_by_default_with_percent_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    diag.configure({})
    log = diag.logger("cni_bridge.x")
    log.debug("hidden %s", 1)
    log.info("hidden too")
    log.warning("no route to %s: %s", "10.0.0.1", "unreachable")
    log.error("%d%% sure", 100)  # %-style, as with logging
    assert capsys.readouterr().err == ("cni-bridge WARNING: no route to 10.0.0.1: unreachable\n"
                                       "cni-bridge ERROR: 100% sure\n")


@pytest.mark.parametrize(("level", "shown"), [("debug", 4), ("INFO", 3), ("error", 1),
                                              ("nonsense", 2)])
def test_the_level_comes_from_the_environment(
    level: str, shown: int, capsys: pytest.CaptureFixture[str]
) -> None:
    diag.configure({diag.LEVEL_ENV: level})
    log = diag.logger("x")
    for emit in (log.debug, log.info, log.warning, log.error):
        emit("line")
    assert capsys.readouterr().err.count("\n") == shown


def test_exc_info_appends_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        diag.logger("x").error("failed", exc_info=True)
    err = capsys.readouterr().err
    assert err.startswith("cni-bridge ERROR: failed\nTraceback")
    assert err.rstrip().endswith("RuntimeError: boom")


def test_a_closed_stderr_never_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stderr", Closed())
    diag.logger("x").warning("lost")


def test_the_server_sets_its_prefix_and_a_default_of_info(
        capsys: pytest.CaptureFixture[str]) -> None:
    diag.configure({}, "INFO", "cni-bridge serve")
    log = diag.logger("x")
    log.debug("hidden")
    log.info("serving on %s", "/tmp/s.sock")
    diag.configure({diag.LEVEL_ENV: "nonsense"}, "INFO", "cni-bridge serve")
    log.info("still shown")
    diag.configure({})  # a call's own settings: the plugin prefix, WARNING
    log.info("hidden again")
    log.warning("a call's warning")
    assert capsys.readouterr().err == ("cni-bridge serve INFO: serving on /tmp/s.sock\n"
                                       "cni-bridge serve INFO: still shown\n"
                                       "cni-bridge WARNING: a call's warning\n")


def test_exception_logs_an_error_with_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise KeyError("gone")
    except KeyError:
        diag.logger("x").exception("worker for %s failed", "bridge ADD")
    err = capsys.readouterr().err
    assert err.startswith("cni-bridge ERROR: worker for bridge ADD failed\nTraceback")
    assert "KeyError: 'gone'" in err
