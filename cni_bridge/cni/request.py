"""One decoded plugin invocation: the environment, the config and the previous result."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cni_bridge.cni.env import CniEnv
from cni_bridge.cni.errors import ConfigError
from cni_bridge.cni.result import Result

VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class PhaseTimer:
    """Collects per-phase durations (ms) for the operator log."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self.phases[name] = round(self.phases.get(name, 0.0) + elapsed, 2)


@dataclass(frozen=True)
class Request:
    env: CniEnv
    stdin: bytes
    config: Mapping[str, Any]
    cni_version: str
    network_name: str
    prev_result: Result | None = None
    timer: PhaseTimer = field(default_factory=PhaseTimer, compare=False, repr=False)

    @property
    def runtime_config(self) -> Mapping[str, Any]:
        """Anything but an object is refused, as Go's decoder refuses it (code 7)."""
        value = self.config.get("runtimeConfig")
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError("runtimeConfig must be a JSON object", repr(value)[:200])
        return value

    def valid_attachments(self) -> frozenset[tuple[str, str]]:
        """GC's (containerID, ifname) pairs to keep, under both keys libcni sends."""
        keep: set[tuple[str, str]] = set()
        for key in VALID_ATTACHMENTS_KEYS:
            items = self.config.get(key)
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, Mapping):
                    keep.add((str(item.get("containerID", "")), str(item.get("ifname", ""))))
        return frozenset(keep)
