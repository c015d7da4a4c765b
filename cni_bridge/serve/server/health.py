"""When to check the firewall (the health watcher, in the server's main process).

A check runs in a forked child (``heal.check``: the main process holds no firewall handle) and
reports through a pipe: at start, every ``check_interval`` seconds, on SIGHUP, and just after
nftables notifications touch a table our records depend on; one at a time, with one more if
something changed meanwhile. Each error is logged once, until a check no longer reports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cni_bridge.diag import logger
from cni_bridge.netlink import Subscription
from cni_bridge.serve.server.backoff import MAX_DELAY, Backoff
from cni_bridge.serve.server.view import ServerView

log = logger(__name__)
DEBOUNCE = 0.05  # notifications of one flush come in a burst: check once, just after it
CHECK_TIMEOUT = 120.0
CHILD_DEADLINE = CHECK_TIMEOUT + 10  # the child's own, should the server not kill it in time
STOP_GRACE = 0.5  # at stop, how long the child gets after SIGTERM before SIGKILL
CHILD_NICENESS = 10
PR_SET_PDEATHSIG = 1
SIGNAL_TRIGGER = "signal"  # an operator's SIGHUP: checked now, whatever the backoff


@dataclass
class Child:
    pid: int
    pipe: int
    started: float
    data: bytes = b""


class Health:
    def __init__(self, view: ServerView, sel: selectors.BaseSelector,
                 watcher: Subscription | None, interval: float,
                 become_child: Callable[[], None]) -> None:
        self.view, self.sel, self.watcher, self.interval = view, sel, watcher, interval
        self.become_child = become_child
        self.child: Child | None = None
        self.due: float | None = time.monotonic()  # one check at start
        self.trigger = "start"
        self.rerun = False
        self.periodic_due = time.monotonic() + interval
        self.backoff = Backoff()
        self.records_seen = 0  # the records view's reads at the last failure
        self.logged: set[str] = set()  # errors logged and still reported
        self.force: set[str] = set()  # backends whose table was deleted: restore whatever

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
        """Start what is due; True when the periodic time came (for other periodic work too)."""
        periodic = now >= self.periodic_due
        if periodic:
            self.periodic_due = now + self.interval
            self.schedule("periodic", now)
        if self.due is not None and now >= self.due:
            self._start()
        if self.child is not None and now >= self.child.started + CHECK_TIMEOUT:
            log.warning("health check %d did not finish in %gs; killed", self.child.pid,
                        CHECK_TIMEOUT)
            _signal_child(self.child.pid, signal.SIGKILL)
            self.child.started = now  # its pipe reports the end when it is reaped
        return periodic

    def schedule(self, trigger: str, when: float) -> None:
        if self.backoff.active and trigger != SIGNAL_TRIGGER:
            self.view.records.refresh()
            if self.view.records.reads != self.records_seen:
                self.records_seen = self.view.records.reads
                self.backoff.records_changed()
            when = self.backoff.when(when)
        if self.due is None or when < self.due:
            self.due, self.trigger = when, trigger

    def stop(self) -> None:
        """End the running check (SIGTERM, then SIGKILL) and reap it."""
        child, self.child = self.child, None
        if child is None:
            return
        _signal_child(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while _running(child.pid):
            if time.monotonic() >= deadline:
                _signal_child(child.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)
        self.sel.unregister(child.pipe)
        os.close(child.pipe)

    def close_in_child(self) -> None:
        if self.child is not None:
            os.close(self.child.pipe)

    def _notified(self, _: object) -> None:
        from cni_bridge.serve.server.watch import drain

        assert self.watcher is not None
        lost: set[str] = set()
        try:
            touched = drain(self.watcher, lost)
        except OSError as exc:
            log.warning("nftables notifications lost (%s); periodic checks only", exc)
            self.sel.unregister(self.watcher)
            return
        if touched:
            self.view.records.refresh()
            ours = self.view.records.backends()
            if touched & ours:
                self.force |= lost & ours
                self.schedule("change: " + ", ".join(sorted(touched)),
                              time.monotonic() + DEBOUNCE)

    def _start(self) -> None:
        self.due = None
        if self.child is not None:
            self.rerun = True  # something changed while the last check ran
            return
        read_end, write_end = os.pipe()
        server, force = os.getpid(), sorted(self.force)
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
                _die_with(server)
                from cni_bridge.serve.server import heal

                report = heal.check(self.view.records.root, self.trigger, force=force)
                with os.fdopen(write_end, "w") as out:
                    out.write(json.dumps(report))
            except BaseException:
                log.exception("health check failed")
            finally:
                os._exit(0)
        os.close(write_end)
        self.force.clear()  # the check just started restores them
        with contextlib.suppress(OSError):  # also done by the child: whichever comes first
            os.setpgid(pid, pid)
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
        now = time.monotonic()
        self._judge(report, now, now - child.started)
        if self.rerun:
            self.rerun = False
            self.schedule("change during the last check", time.monotonic())

    def _judge(self, report: dict[str, Any], now: float, took: float = 0.0) -> None:
        """Back off after a failed restore, reset after a good one; log what is new."""
        errors = list(report.get("errors") or [])
        new = [e for e in errors if e not in self.logged]
        self.logged = set(errors)
        if report.get("failed"):
            delay = self.backoff.failed(now, took)
            self.records_seen = self.view.records.reads
            self.schedule("retry after a failed restore", self.backoff.not_before)
            if new:
                log_report(report, new, f"; trying again in {delay:g} s, then less and less "
                                        f"often (up to every {MAX_DELAY:g} s); the "
                                        "same errors are not logged again")
            return
        ended = self.backoff.succeeded()
        if ended:
            log.warning("health check: restored after %d failed attempt(s)", ended)
        log_report(report, new)


def log_report(report: dict[str, Any], errors: list[str], retry: str = "") -> None:
    if report.get("missing"):
        log.warning("firewall skeleton damaged (%s: %s); restored %s record(s) in %s ms, "
                    "%s transaction(s)%s", report.get("trigger"), "; ".join(report["missing"]),
                    report.get("restored"), report.get("ms"), report.get("transactions", "?"),
                    f"; still missing: {report['remaining']}" if report.get("remaining") else "")
    for error in errors:
        log.warning("health check: %s", error)
    if retry:
        log.warning("health check failed%s", retry)


def _die_with(server: int) -> None:
    """In the health child: it ends with `server` or at its deadline (SIGALRM's default
    action), and runs at a lower priority: calls come first."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:  # it died before prctl took effect: nobody will kill us
        os._exit(0)
    signal.setitimer(signal.ITIMER_REAL, CHILD_DEADLINE)
    os.nice(CHILD_NICENESS)


def _signal_child(pid: int, sig: int) -> None:
    """Its process group (an ``iptables-restore`` it runs too), or itself before it has one."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _running(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:  # reaped already, by the server's SIGCHLD handler
        return False
