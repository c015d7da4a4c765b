"""The watch stream: one JSON event a line (Go's json.Encoder), split anywhere by chunking.
Pure: bytes in, events out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")


class WatchFormatError(ValueError):
    """The stream holds something that is not a watch event."""


@dataclass(frozen=True)
class WatchEvent:
    type: str
    object: dict[str, Any]

    @property
    def status_code(self) -> int | None:
        """For an ERROR event: the Status object's code (410 when the version is too old)."""
        code = self.object.get("code")
        return code if isinstance(code, int) else None


def parse_event(doc: Any) -> WatchEvent:
    if not isinstance(doc, dict) or doc.get("type") not in EVENT_TYPES \
            or not isinstance(doc.get("object"), dict):
        raise WatchFormatError(f"not a watch event: {json.dumps(doc)[:200]}")
    return WatchEvent(doc["type"], doc["object"])


class EventDecoder:
    """Feed bytes as they arrive; get back the events of the lines they complete."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[WatchEvent]:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [decode_line(line) for line in lines if line.strip()]


def decode_line(line: bytes) -> WatchEvent:
    try:
        doc = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise WatchFormatError(f"watch stream: not JSON ({exc}): {line[:200]!r}") from None
    return parse_event(doc)
