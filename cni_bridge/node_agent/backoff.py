"""Exponential backoff for retries against the API server (pure; the caller sleeps)."""

from __future__ import annotations

import random
from collections.abc import Callable


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
