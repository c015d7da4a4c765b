"""The agent: the nodes it knows, and one reconcile that brings the conflist and the routes in
line with them. Woken by the watcher (node changes), by rtnetlink (addresses changed, or a route
of ours removed by hand: it comes back at once) and by a timer (what sends no notification:
IPv4 routes flushed with their link)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cni_bridge import diag
from cni_bridge.cni.result import IPNetwork
from cni_bridge.net.netlink import Netlink
from cni_bridge.node_agent.api import ApiClient, NodeList
from cni_bridge.node_agent.conflist import ConflistWriter, plan_conflist
from cni_bridge.node_agent.nodes import NodeFormatError, NodeInfo, find_conflicts, parse_node
from cni_bridge.node_agent.route_events import RouteKey, watch_route_events
from cni_bridge.node_agent.route_exec import apply_changes, local_networks, main_table
from cni_bridge.node_agent.route_plan import diff_routes, plan_routes
from cni_bridge.node_agent.watcher import (
    Backoff,
    Changed,
    Fatal,
    Message,
    RoutesGone,
    Synced,
    Watcher,
)

RETRY_FIRST = 0.5  # seconds to the next look when something is settling or was refused


@dataclass(frozen=True)
class AgentOptions:
    node_name: str
    conf_dir: Path
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    cni_version: str | None = None
    ready_file: Path | None = None
    resync_interval: float = 10.0


def say(level: str, text: str) -> None:
    diag.emit(level, "node-agent: %s", (text,))


class Agent:
    def __init__(self, opts: AgentOptions, nl: Netlink) -> None:
        self.opts = opts
        self.nl = nl
        self.nodes: dict[str, NodeInfo] = {}
        self.synced = False
        self.conflist = ConflistWriter(opts.conf_dir, opts.cni_version)
        self.said: set[str] = set()  # notes said and still true: not said again
        self.wanted: set[RouteKey] = set()  # (destination, gateway) of the last plan's routes
        self.again = False  # the last reconcile asks for another look soon

    def take(self, message: Message) -> bool:
        """Learn from one message; True if the node needs a look."""
        if isinstance(message, Fatal):
            raise message.error
        if isinstance(message, Synced):
            self.replace_all(message.nodes)
            return True
        if isinstance(message, Changed):
            return self.change(message.event.type, message.event.object)
        if isinstance(message, RoutesGone):  # ours deleted: a look only if still wanted
            return not message.keys.isdisjoint(self.wanted)
        return True

    def replace_all(self, listed: NodeList) -> None:
        nodes = {}
        for obj in listed.items:
            node = self._read(obj)
            if node is not None:
                nodes[node.name] = node
        self.nodes = nodes
        if not self.synced:
            say("INFO", f"listed {len(nodes)} nodes at resourceVersion "
                f"{listed.resource_version}")
        self.synced = True

    def change(self, kind: str, obj: dict[str, object]) -> bool:
        """False when nothing the agent uses changed (most MODIFIED events are heartbeats)."""
        node = self._read(obj)
        if node is None:
            return False
        if kind == "DELETED":
            return self.nodes.pop(node.name, None) is not None
        if self.nodes.get(node.name) == node:
            return False
        self.nodes[node.name] = node
        return True

    def _read(self, obj: dict[str, object]) -> NodeInfo | None:
        try:
            return parse_node(obj)
        except NodeFormatError as exc:
            say("WARNING", f"ignored: {exc}")
            return None

    def reconcile(self) -> bool:
        """True when the conflist is in place. Sets `again` when a look soon may find more
        to do (a refused route, a tentative address): nothing may notify that moment."""
        conflicts = find_conflicts(self.nodes.values())
        ready = self._conflist(conflicts)
        local, settling = local_networks(self.nl)
        plan = plan_routes(self.nodes, self.opts.node_name, local, conflicts)
        self.wanted = {(route.dst, route.gateway) for route in plan.wanted}
        changes = diff_routes(plan.wanted, main_table(self.nl))
        failed = apply_changes(self.nl, changes, lambda text: say("INFO", text))
        self.note([("INFO", text) for text in (*plan.notes, *changes.notes)] +
                  [("WARNING", f"{text}; trying again") for text in failed])
        self.again = settling or bool(failed)
        return ready

    def _conflist(self, conflicts: dict[str, str]) -> bool:
        from cni_bridge.deploy.install import InstallError

        plan = plan_conflist(self.opts.node_name, self.nodes, conflicts,
                             self.opts.cluster_cidrs, self.conflist.derived_before())
        if plan.waiting:
            self.note_conflist(plan.waiting)
            return False
        try:
            done = self.conflist.ensure_described(plan)
        except (InstallError, OSError) as exc:
            self.note_conflist(f"conflist not written: {exc}")
            return False
        self.note_conflist("")
        if done:
            say("INFO", done)
        return True

    def note_conflist(self, text: str) -> None:
        """The conflist's one standing note (said when it changes)."""
        stale = {s for s in self.said if s.startswith("conflist: ")}
        current = f"conflist: {text}"
        if text and current not in self.said:
            say("WARNING", text)
        self.said -= stale
        if text:
            self.said.add(current)

    def note(self, notes: Iterable[tuple[str, str]]) -> None:
        """Say each (level, text) once while it holds."""
        current = dict((text, level) for level, text in notes)
        for text in sorted(current.keys() - self.said):
            say(current[text], text)
        keep = {s for s in self.said if s.startswith("conflist: ")}
        self.said = keep | current.keys()


def set_ready(path: Path | None, ready: bool) -> None:
    """The readiness file exists exactly while the node is ready."""
    if path is None:
        return
    if ready:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def run_once(opts: AgentOptions, client: ApiClient) -> int:
    """List, reconcile, exit: 0 when the conflist is in place."""
    listed = client.list_nodes()
    with Netlink.for_current() as nl:
        agent = Agent(opts, nl)
        agent.replace_all(listed)
        return 0 if agent.reconcile() else 1


class Stopped(Exception):
    """SIGTERM or SIGINT."""


def stop_on_signals() -> None:
    import signal

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run(opts: AgentOptions, client: ApiClient) -> int:
    """Until SIGTERM/SIGINT (exit 0) or a denied API request (raised)."""
    stop_on_signals()
    try:
        return _loop(opts, client)
    except Stopped:
        say("INFO", "stopped; routes and conflist left in place")
        return 0


def _loop(opts: AgentOptions, client: ApiClient) -> int:
    inbox: queue.Queue[Message] = queue.Queue()
    watcher = Watcher(client, inbox, say)
    retry = Backoff(first=RETRY_FIRST, jitter=0.0)
    set_ready(opts.ready_file, False)
    with Netlink.for_current() as nl:
        agent = Agent(opts, nl)

        def routes_changed(gone: frozenset[RouteKey] | None) -> None:
            inbox.put(None if gone is None else RoutesGone(gone))

        threading.Thread(target=watch_route_events, args=(routes_changed, watcher.stop),
                         name="route-events", daemon=True).start()
        watcher.start()
        try:
            while True:
                if agent.again:  # soon, then less often while it lasts
                    wait = min(retry.next(), opts.resync_interval)
                else:
                    retry.reset()
                    wait = opts.resync_interval
                try:
                    message = inbox.get(timeout=wait)
                except queue.Empty:
                    message = None  # the periodic look
                look = agent.take(message)
                while True:  # everything queued meanwhile: one reconcile for all of it
                    try:
                        look = agent.take(inbox.get_nowait()) or look
                    except queue.Empty:
                        break
                if agent.synced and look:
                    set_ready(opts.ready_file, agent.reconcile())
        finally:
            watcher.stop.set()
            set_ready(opts.ready_file, False)
