"""A rollback stack: every step of ADD that changes something pushes how to undo it."""

from __future__ import annotations

from collections.abc import Callable

from cni_bridge.diag import logger

log = logger(__name__)


class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        """Undo in reverse order; a failing step is logged and the rest still run."""
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # rollback must continue past any single failure
                log.warning("rollback: could not %s: %s", what, exc)
