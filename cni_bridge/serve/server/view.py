"""What the server keeps in memory and ``cni-bridge status`` reads from it: the records per
network, read again only when the network's directory changed (its mtime: a record written or
removed is a rename or an unlink in it, whoever ran the call); the last health report; counters.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cni_bridge.firewall.recorded import NFT_ONLY, backend_of, has_nft_only_rules
from cni_bridge.node import records

# How a worker ends (its exit status, read by the server when it reaps it). Killed by SIGIO:
# its caller went away mid-call. Anything else: the worker died, the caller got code 11.
EXIT_SERVED = 0  # the result was sent (or, for a spare, none was handed to it)
EXIT_REFUSED = 3  # refused before accepting: the caller ran the call itself
EXIT_NO_REQUEST = 4  # accepted, but no request came (the caller went away): nothing ran
EXIT_UNDELIVERED = 5  # the call ran; its caller was gone when the result was ready
EXIT_FAILED = 70  # an exception, logged by the worker
# A directory changed this recently may change again within the same mtime tick unseen: such a
# listing is read again next time (git's "racily clean" index entries).
RACY_NS = 50_000_000


class Attachment(NamedTuple):
    """What the view keeps of a record: no more than status shows (a node may have
    thousands; the health check reads the records themselves)."""

    container: str
    ifname: str
    plugin: str
    backend: str
    nft_rules: bool = False  # a spoof check or isolation: nftables rules, whatever the backend

    @classmethod
    def of(cls, rec: records.Record) -> Attachment:
        return cls(rec.container_id, rec.ifname, sys.intern(rec.plugin),
                   sys.intern(backend_of(rec)),
                   has_nft_only_rules(rec))

    def shown(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if k != "nft_rules"}


@dataclass
class _NetworkDir:
    mtime_ns: int
    racy: bool
    attachments: list[Attachment]


class RecordsView:
    def __init__(self, root: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.root = root
        self._clock_ns = clock_ns
        self._networks: dict[str, _NetworkDir] = {}
        self.reads = 0  # directory listings read (for tests and the curious)

    def refresh(self) -> None:
        try:
            names = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except OSError:
            names = []
        for gone in set(self._networks) - set(names):
            del self._networks[gone]
        for name in names:
            try:
                mtime = os.stat(self.root / name).st_mtime_ns
            except OSError:
                self._networks.pop(name, None)
                continue
            known = self._networks.get(name)
            if known is not None and known.mtime_ns == mtime and not known.racy:
                continue
            now = self._clock_ns()
            atts = [Attachment.of(r) for r in records.list_records(self.root, name)]
            self.reads += 1
            self._networks[name] = _NetworkDir(mtime, now - mtime < RACY_NS, atts)

    def networks(self) -> dict[str, list[Attachment]]:
        return {name: d.attachments for name, d in self._networks.items() if d.attachments}

    def backends(self) -> set[str]:
        """The firewalls whose changes concern our records."""
        atts = [a for d in self._networks.values() for a in d.attachments]
        return {a.backend for a in atts} | ({NFT_ONLY} if any(a.nft_rules for a in atts)
                                            else set())


@dataclass
class InFlight:
    caller_pid: int
    role: str
    verb: str
    started: float


@dataclass
class ServerView:
    socket: str
    digest: str
    netns: int
    records: RecordsView
    netns_cookie: int | None = None  # the namespace's identity (its inode may be reused)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    served: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # the worker died mid-call: its caller got code 11
    abandoned: int = 0  # the caller went away first (the call stopped, or never started)
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    last_restore: dict[str, Any] | None = None
    checks: int = 0

    def finished(self, worker_pid: int, exit_code: int) -> InFlight | None:
        """A worker was reaped (`exit_code`: EXIT_*, or minus the signal that ended it).
        Returns its call when it was lost: the worker died, the caller got code 11."""
        call = self.in_flight.pop(worker_pid, None)
        if call is None:
            return None
        if exit_code == EXIT_SERVED:
            self.served[call.verb] += 1
        elif exit_code == EXIT_REFUSED:
            self.refused["cannot enter the caller's namespaces"] += 1
        elif exit_code in (EXIT_NO_REQUEST, EXIT_UNDELIVERED, -signal.SIGIO):
            self.abandoned += 1
        else:
            self.lost += 1
            return call
        return None

    def checked(self, report: dict[str, Any]) -> None:
        self.checks += 1
        self.health = report
        if report.get("restored"):
            self.last_restore = report

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The status answer (JSON-able)."""
        now = time.time() if now is None else now
        self.records.refresh()
        networks = {name: [a.shown() for a in atts]
                    for name, atts in self.records.networks().items()}
        return {
            "pid": self.pid, "socket": self.socket, "digest": self.digest, "netns": self.netns,
            "netns_cookie": self.netns_cookie, "state_root": str(self.records.root),
            "started": self.started, "uptime_s": round(now - self.started, 1),
            "served": dict(self.served), "served_total": sum(self.served.values()),
            "refused": dict(self.refused), "lost": self.lost, "abandoned": self.abandoned,
            "in_flight": [{"worker": pid, "caller": c.caller_pid, "role": c.role,
                           "verb": c.verb, "seconds": round(now - c.started, 3)}
                          for pid, c in sorted(self.in_flight.items())],
            "health": self.health, "last_restore": self.last_restore, "checks": self.checks,
            "networks": networks,
        }
