"""When the healer may try a failed restore again (pure timing: the caller passes the clock).

A failed restore is tried again after 1 s, then 2, 4, ... up to 5 min, never sooner because of
a notification: each run costs a fork, a firewall read and, for a big one, seconds of CPU and
the firewall's commit lock, which calls wait for. Every wait is also at least `BUSY_RATIO` times
as long as the failed restore took, so it occupies at most a tenth of the time. Success resets
it; so does a change of the records (a DEL may have removed the culprit), but the next try still
waits for the first step after the last failure: a node busy with ADDs retries at most once per
first step.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 1.0
MAX_DELAY = 300.0
BUSY_RATIO = 10.0


@dataclass
class Backoff:
    delay: float = 0.0  # the last wait given; 0: not backing off
    not_before: float = 0.0
    last_failure: float | None = None
    failures: int = 0  # in a row
    floor: float = 0.0  # the first step after the last failure (what it took, times the ratio)

    @property
    def active(self) -> bool:
        return self.failures > 0

    def when(self, wanted: float) -> float:
        return max(wanted, self.not_before)

    def failed(self, now: float, took: float = 0.0) -> float:
        """A restore that took `took` seconds failed at `now`: the wait before the next one."""
        self.floor = min(max(FIRST_DELAY, took * BUSY_RATIO), MAX_DELAY)
        step = self.floor if self.delay == 0 else self.delay * 2
        self.delay = min(max(step, self.floor), MAX_DELAY)
        self.failures += 1
        self.last_failure = now
        self.not_before = now + self.delay
        return self.delay

    def succeeded(self) -> int:
        """Reset; returns how many failures in a row this ended."""
        ended = self.failures
        self.delay, self.not_before, self.last_failure, self.failures = 0.0, 0.0, None, 0
        self.floor = 0.0
        return ended

    def records_changed(self) -> None:
        if self.last_failure is None:
            return
        self.delay = 0.0  # the next failure waits the first step again
        self.not_before = min(self.not_before, self.last_failure + self.floor)
