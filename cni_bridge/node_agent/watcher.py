"""The list-and-watch loop of the Node objects, on its own thread, feeding the agent's queue.
Survives the API going away: keeps what it has, retries with backoff, resumes from the last
resourceVersion, lists again on 410."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cni_bridge.cni.result import IPAddress, IPNetwork
from cni_bridge.node_agent.api import (
    ApiClient,
    ApiDenied,
    ApiError,
    ApiUnavailable,
    NodeList,
    WatchEvent,
    WatchExpired,
)
from cni_bridge.node_agent.nodes import resource_version

WATCH_TIMEOUT = 300  # seconds a watch request asks for; the watch is then resumed


class Backoff:
    """Doubling delays, each shortened by up to `jitter` of itself so that the agents of a
    cluster do not retry in step."""

    def __init__(self, first: float = 0.2, cap: float = 30.0, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self.jitter, self._rng = first, cap, jitter, rng
        self.failures = 0

    def next(self) -> float:
        delay: float = min(self.cap, self.first * 2.0 ** self.failures)
        self.failures += 1
        return delay * (1 - self.jitter * self._rng())

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class Synced:
    """A full list: it replaces every node the agent knew."""

    nodes: NodeList


@dataclass(frozen=True)
class Changed:
    event: WatchEvent


@dataclass(frozen=True)
class Fatal:
    error: ApiError


@dataclass(frozen=True)
class RoutesGone:
    """Routes of ours were deleted (by hand, or by the agent): (destination, gateway)."""

    keys: frozenset[tuple[IPNetwork, IPAddress | None]]


Message = Synced | Changed | Fatal | RoutesGone | None  # None: look again (timer, addresses)


class Watcher:
    def __init__(self, client: ApiClient, out: queue.Queue[Message],
                 log: Callable[[str, str], None], backoff: Backoff | None = None) -> None:
        self.client = client
        self.out = out
        self.log = log
        self.backoff = backoff or Backoff()
        self.stop = threading.Event()
        self.unreachable = False
        self.version: str | None = None  # None: list first
        self.thread = threading.Thread(target=self.run, name="node-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.version is None:
                    listed = self.client.list_nodes()
                    self._reached()
                    self.out.put(Synced(listed))
                    self.version = listed.resource_version
                self._watch(self.version)
            except WatchExpired as exc:
                self.log("INFO", f"{exc}: listing the nodes again")
                self.version = None
            except ApiDenied as exc:
                self.out.put(Fatal(exc))
                return
            except ApiUnavailable as exc:
                self._unreached(exc)
                self.stop.wait(self.backoff.next())
            except ApiError as exc:
                self.log("WARNING", f"{exc}; listing again")
                self.version = None
                self.stop.wait(self.backoff.next())
            except Exception as exc:  # a bug: end the agent loudly rather than go deaf
                self.out.put(Fatal(ApiError(f"watching the nodes failed: {exc!r}")))
                return

    def _watch(self, version: str) -> None:
        """Keeps the last resourceVersion: a broken watch resumes from it."""
        events = self.client.watch_nodes(version, WATCH_TIMEOUT)
        self._reached()
        for event in events:
            self.version = resource_version(event.object) or self.version
            if event.type != "BOOKMARK":
                self.out.put(Changed(event))
            if self.stop.is_set():
                break

    def _reached(self) -> None:
        self.backoff.reset()
        if self.unreachable:
            self.unreachable = False
            self.log("INFO", "API server reachable again; watching the nodes")

    def _unreached(self, exc: Exception) -> None:
        if not self.unreachable:
            self.unreachable = True
            where = f" from resourceVersion {self.version}" if self.version else ""
            self.log("WARNING", f"{exc}; keeping the conflist and routes as they are, "
                     f"retrying with backoff{where}")

