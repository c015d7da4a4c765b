"""The resident server's main process: one thread, one event loop.

Every accepted call gets a worker (forked, or a spare) that owns the connection from then on:
the main process only decides, forks, reaps and counts, and holds no netlink or firewall handle
but its notification socket. At most ``max_workers`` calls run at once; beyond that calls wait
in the backlog, and a caller whose HELLO is not answered in time runs the call itself.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cni_bridge.diag import emit, logger
from cni_bridge.netlink import Subscription
from cni_bridge.node.state import sweep_logged
from cni_bridge.serve import wire
from cni_bridge.serve.server import listener, spare, worker
from cni_bridge.serve.server.health import SIGNAL_TRIGGER, Health
from cni_bridge.serve.server.peer import Call, Identity, call_of, peer_identity, refusal
from cni_bridge.serve.server.view import EXIT_FAILED, EXIT_SERVED, InFlight, ServerView

log = logger(__name__)
DRAIN_SECONDS = 15.0  # at stop, how long calls in flight are waited for
SPARE_DELAY = 0.003  # without a call, before a spare is forked (see _fork_spare)
_ANCILLARY = socket.CMSG_SPACE(4 * (len(wire.CALL_FDS) + 1))
_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # the loop's own


@dataclass(frozen=True)
class Options:
    socket: str  # the defaults are the command line's (admin.serve_cmd)
    max_workers: int
    spare_workers: int  # forked in advance, while no call runs (0: fork at each call)
    check_interval: float
    executable: str | None = None  # as started: when it changes (an upgrade), the server stops


@dataclass
class Pending:
    """A connection whose HELLO is not complete yet."""

    conn: socket.socket
    peer: Identity
    deadline: float
    accepted: float = field(default_factory=time.time)  # for the call log's timeline
    data: bytes = b""
    fds: list[int] = field(default_factory=list)
    hello: float = 0.0  # when the HELLO was complete

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.conn.close()


class Server:
    def __init__(self, opts: Options, sock: socket.socket, inode: listener.Identity | None,
                 view: ServerView, home: Identity, watcher: Subscription | None,
                 setns: Callable[[int, int], None]) -> None:
        # inode None: systemd's socket (activation), which outlives us and is never unlinked
        self.opts, self.sock, self.inode, self.view = opts, sock, inode, view
        self.home, self.watcher, self.setns = home, watcher, setns
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.pending: dict[int, Pending] = {}
        self.health = Health(view, self.sel, watcher, opts.check_interval, self._become_child)
        self.accepting = False
        self.stopping = False
        self.hurry = False  # a second SIGTERM or SIGINT: stop without waiting for calls
        self.installed = _file_identity(opts.executable)
        self.spares: list[spare.Spare] = []  # the next calls' workers, forked in advance
        self.spares_after = 0.0  # monotonic time before which no spare is forked

    def run(self) -> int:
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in _SIGNALS:
            signal.signal(sig, _wake_only)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._signals)
        self.health.watch()
        self._accept_more(True)
        while not self.stopping:
            self._fork_spare()
            self._turn(self._timeout(time.monotonic()))
            self._on_time(time.monotonic())
        self._shutdown()
        return 0

    def _turn(self, timeout: float) -> None:
        """One turn of the loop. A handler's unexpected failure is logged, not fatal: the
        server keeps serving (and a caller it failed runs its call itself)."""
        for key, _ in self.sel.select(timeout):
            try:
                key.data(key.fileobj)
            except Exception:
                log.exception("unexpected failure in the event loop")

    def _timeout(self, now: float) -> float:
        due = [*self.health.deadlines(), *(p.deadline for p in self.pending.values())]
        spares = self._spares_due()
        return max(0.0, min(due if spares is None else [*due, spares]) - now)

    def _on_time(self, now: float) -> None:
        for fd, p in list(self.pending.items()):
            if now >= p.deadline:  # a caller that never sent its HELLO
                self._drop(fd)
        periodic = self.health.on_time(now)
        if periodic:
            sweep_logged()  # the state of namespaces gone since
        if periodic and self.installed != _file_identity(self.opts.executable):
            log.warning("%s changed (an upgrade): stopping, so that the new build can be "
                        "started; its plugins run their calls themselves meanwhile",
                        self.opts.executable)
            self.stopping = True

    def _accept_more(self, yes: bool) -> None:
        if yes and not self.accepting:
            self.sel.register(self.sock, selectors.EVENT_READ, self._accept)
        elif not yes and self.accepting:
            self.sel.unregister(self.sock)
        self.accepting = yes

    def _signals(self, _: object) -> None:
        try:
            received = self.wake_r.recv(256)
        except BlockingIOError:
            return
        if signal.SIGCHLD in received:
            self._reap()
        if signal.SIGHUP in received:
            self.health.schedule(SIGNAL_TRIGGER, time.monotonic())
        if signal.SIGTERM in received or signal.SIGINT in received:
            self.hurry = self.stopping
            self.stopping = True

    def _accept(self, _: object) -> None:
        while len(self.view.in_flight) + len(self.pending) < self.opts.max_workers:
            try:
                conn, _addr = self.sock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            peer = peer_identity(conn)
            if peer.uid != 0:  # not even read: the socket is 0600, this is someone's mistake
                self.view.refused[f"caller uid {peer.uid} is not root"] += 1
                conn.close()
                continue
            pending = Pending(conn, peer, time.monotonic() + wire.HELLO_TIMEOUT)
            self.pending[conn.fileno()] = pending
            self.sel.register(conn, selectors.EVENT_READ, self._hello)
            self._hello(conn)  # usually in already: the caller sends it right after connect
        self._accept_more(False)

    def _drop(self, fd: int) -> None:
        pending = self.pending.pop(fd)
        self.sel.unregister(pending.conn)
        pending.close()
        self._resume()

    def _resume(self) -> None:
        if not self.stopping and \
                len(self.view.in_flight) + len(self.pending) < self.opts.max_workers:
            self._accept_more(True)

    def _hello(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        p = self.pending[fd]
        try:
            data, ancillary, flags, _ = conn.recvmsg(wire.MAX_HELLO, _ANCILLARY)
        except BlockingIOError:
            return
        except OSError:
            data, ancillary, flags = b"", [], 0
        p.fds += wire.unpack_fds(ancillary)
        p.data += data
        try:
            frame = wire.split_frame(p.data, wire.MAX_HELLO)
        except wire.ProtocolError:
            frame, data = None, b""
        if frame is None and data and not flags & socket.MSG_CTRUNC:
            return  # more to come
        self.pending.pop(fd)
        self.sel.unregister(conn)
        p.hello = time.time()
        if frame is None:
            p.close()
        else:
            self._answer(p, frame[0])
        self._resume()

    def _answer(self, p: Pending, hello: wire.Message) -> None:
        reason = refusal(hello, p.peer, self.home, self.view.digest)
        if reason is None and hello.kind == wire.CALL and len(p.fds) != len(wire.CALL_FDS):
            reason = f"expected {len(wire.CALL_FDS)} descriptors, got {len(p.fds)}"
        if reason is not None:
            self._refuse(p, reason)
        elif hello.kind == wire.STATUS:
            _reply(p.conn, wire.STATUS, json.dumps(self.view.snapshot()))
            p.close()
        else:
            self._fork_worker(p, hello)

    def _refuse(self, p: Pending, reason: str, detail: str = "",
                level: str = "INFO") -> None:
        message = f"{reason}: {detail}" if detail else reason
        self.view.refused[reason] += 1
        emit(level, "refused pid %d (it runs the call itself): %s", (p.peer.pid, message))
        _reply(p.conn, wire.REFUSE, message)
        p.close()

    def _spares_due(self) -> float | None:
        if len(self.spares) >= self.opts.spare_workers or self.view.in_flight:
            return None
        return self.spares_after

    def _fork_spare(self) -> None:
        """A missing spare worker, once no call has run for SPARE_DELAY: a fork while a call
        runs takes CPU from it, and one just after a call delays the next call of the same
        operation (an ADD's portmap after its bridge); measured with tests/perf/overhead.py."""
        due = self._spares_due()
        if due is None or time.monotonic() < due:
            return
        try:
            self.spares.append(spare.fork(self._become_child, self._serve_handed))
        except OSError as exc:  # calls get a worker forked for each meanwhile
            log.debug("no spare worker: %s", exc)

    def _serve_handed(self, ctl: socket.socket) -> int:
        """In a spare: forget the server's environment, wait for a call, be its worker."""
        worker.forget_server()
        spare.prefault()
        handed = spare.receive(ctl)
        if handed is None:
            return EXIT_SERVED  # the server closed the pair before handing a call over
        return self._work(*handed)

    def _work(self, conn: socket.socket, fds: list[int], call: Call,
              timeline: dict[str, float]) -> int:
        try:
            return worker.run(conn, fds, call, self.setns, timeline)
        except BaseException:
            log.exception("worker for %s %s failed", call.role, call.verb)
            return EXIT_FAILED

    def _fork_worker(self, p: Pending, hello: wire.Message) -> None:
        call = call_of(hello)
        timeline = {"accept": p.accepted, "hello": p.hello}
        self.spares_after = time.monotonic() + SPARE_DELAY
        ready = self.spares.pop(0) if self.spares else None
        if ready is not None and ready.hand(p.conn, p.fds, call, timeline):
            pid = ready.pid
        else:
            try:
                pid = os.fork()
            except OSError as exc:  # out of processes or memory: the caller runs it itself
                self._refuse(p, "cannot fork a worker", str(exc), "WARNING")
                return
            if pid == 0:
                code = EXIT_FAILED
                try:
                    self._become_child(keep=p.conn)
                    timeline["worker"] = time.time()
                    code = self._work(p.conn, p.fds, call, timeline)
                finally:
                    os._exit(code)
        self.view.in_flight[pid] = InFlight(p.peer.pid, call.role, call.verb, time.time())
        p.close()

    def _become_child(self, keep: socket.socket | None = None) -> None:
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)  # a Ctrl-C meant for the server does not cut a call short
        gc.disable()
        self.sel.close()
        for s in (self.sock, self.wake_r, self.wake_w, self.watcher):
            if s is not None:
                s.close()
        for other in self.spares:  # the main process's end: the spares are not ours
            other.close()
        for p in self.pending.values():
            if p.conn is not keep:
                p.close()
        self.health.close_in_child()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            self.spares_after = time.monotonic() + SPARE_DELAY
            for dead in [s for s in self.spares if s.pid == pid]:  # died unused
                dead.close()
                self.spares.remove(dead)
            lost = self.view.finished(pid, code)
            if lost is not None:
                log.warning("%s %s of pid %d lost: its worker %d ended with status %d "
                            "mid-call (the caller got code 11)", lost.role, lost.verb,
                            lost.caller_pid, pid, code)
        self._resume()

    def _shutdown(self) -> None:
        """No new call (the socket is gone: plugins run calls themselves), then wait a while
        for the calls in flight: they would finish anyway, but a supervisor that kills what
        is left of a stopped service (a container runtime) would cut them short."""
        self._accept_more(False)
        listener.remove(self.opts.socket, self.inode)
        self.sock.close()
        for unused in self.spares:  # each sees its pair closed and exits
            unused.close()
        self.spares.clear()
        self.health.stop()  # a restore is the server's work: it ends with it
        for fd in list(self.pending):
            self._drop(fd)
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.view.in_flight and not self.hurry and time.monotonic() < deadline:
            self._turn(deadline - time.monotonic())
        running = len(self.view.in_flight)
        log.info("stopped" + (f"; {running} call(s) still running finish on their own"
                              if running else ""))


def _file_identity(path: str | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st else None


def _wake_only(signum: int, frame: object) -> None:
    """The signal's number reaches the loop through the wakeup fd."""


def _reply(conn: socket.socket, kind: str, text: str) -> None:
    conn.settimeout(wire.HELLO_TIMEOUT)  # a status answer may exceed the socket buffer
    wire.send_quietly(conn, kind, text)
