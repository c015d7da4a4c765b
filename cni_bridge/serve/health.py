"""The health watcher's timing, in the server's main process: when to check the firewall.

A check runs in a forked child (``heal.check``: the main process holds no firewall handle) and
reports back through a pipe. It runs at start, every ``check_interval`` seconds, on SIGHUP, and
just after nftables notifications say that a table our records depend on lost something; one
at a time, with one more if something changed while it ran.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cni_bridge.serve.view import ServerView

log = logging.getLogger("cni_bridge.serve")
DEBOUNCE = 0.05  # notifications of one flush come in a burst: check once, just after it
CHECK_TIMEOUT = 120.0


@dataclass
class Child:
    pid: int
    pipe: int
    started: float
    data: bytes = b""


class Health:
    def __init__(self, view: ServerView, sel: selectors.BaseSelector,
                 watcher: socket.socket | None, interval: float,
                 become_child: Callable[[], None]) -> None:
        self.view, self.sel, self.watcher, self.interval = view, sel, watcher, interval
        self.become_child = become_child
        self.child: Child | None = None
        self.due: float | None = time.monotonic()  # one check at start
        self.trigger = "start"
        self.rerun = False
        self.periodic_due = time.monotonic() + interval

    def watch(self) -> None:
        if self.watcher is not None:
            self.sel.register(self.watcher, selectors.EVENT_READ, self._notified)

    def deadlines(self) -> list[float]:
        due = [self.periodic_due]
        if self.due is not None:
            due.append(self.due)
        if self.child is not None:
            due.append(self.child.started + CHECK_TIMEOUT)
        return due

    def on_time(self, now: float) -> bool:
        """Start what is due; True when the periodic time came (for other periodic work)."""
        periodic = now >= self.periodic_due
        if periodic:
            self.periodic_due = now + self.interval
            self.schedule("periodic", now)
        if self.due is not None and now >= self.due:
            self._start()
        if self.child is not None and now >= self.child.started + CHECK_TIMEOUT:
            log.warning("health check %d did not finish in %gs; killed", self.child.pid,
                        CHECK_TIMEOUT)
            os.kill(self.child.pid, signal.SIGKILL)
            self.child.started = now  # its pipe reports the end when it is reaped
        return periodic

    def schedule(self, trigger: str, when: float) -> None:
        if self.due is None or when < self.due:
            self.due, self.trigger = when, trigger

    def close_in_child(self) -> None:
        if self.child is not None:
            os.close(self.child.pipe)

    def _notified(self, _: object) -> None:
        from cni_bridge.serve.watch import drain

        assert self.watcher is not None
        try:
            touched = drain(self.watcher)
        except OSError as exc:
            log.warning("nftables notifications lost (%s); periodic checks only", exc)
            self.sel.unregister(self.watcher)
            return
        if touched:
            self.view.records.refresh()
            if touched & self.view.records.backends():
                self.schedule("change: " + ", ".join(sorted(touched)),
                              time.monotonic() + DEBOUNCE)

    def _start(self) -> None:
        self.due = None
        if self.child is not None:
            self.rerun = True  # something changed while the last check ran
            return
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            log.warning("cannot fork the health check (%s); trying again later", exc)
            return
        if pid == 0:
            try:
                os.close(read_end)
                self.become_child()
                from cni_bridge.serve import heal

                report = heal.check(self.view.records.root, self.trigger)
                with os.fdopen(write_end, "w") as out:
                    out.write(json.dumps(report))
            except BaseException:
                log.exception("health check failed")
            finally:
                os._exit(0)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.child = Child(pid, read_end, time.monotonic())
        self.sel.register(read_end, selectors.EVENT_READ, self._report)

    def _report(self, _: object) -> None:
        child = self.child
        assert child is not None
        try:
            chunk = os.read(child.pipe, 1 << 16)
        except BlockingIOError:
            return
        if chunk:
            child.data += chunk
            return
        self.sel.unregister(child.pipe)
        os.close(child.pipe)
        self.child = None
        try:
            report = json.loads(child.data)
        except ValueError:
            report = {"time": time.time(), "trigger": self.trigger, "errors": [
                "the health check ended without a report"], "missing": [], "restored": 0}
        self.view.checked(report)
        log_report(report)
        if self.rerun:
            self.rerun = False
            self.schedule("change during the last check", time.monotonic())


def log_report(report: dict[str, Any]) -> None:
    if report.get("missing"):
        log.warning("firewall skeleton damaged (%s: %s); restored %s record(s) in %s ms%s",
                    report.get("trigger"), "; ".join(report["missing"]), report.get("restored"),
                    report.get("ms"),
                    f"; still missing: {report['remaining']}" if report.get("remaining") else "")
    for error in report.get("errors") or []:
        log.warning("health check: %s", error)
