"""In-process fuzzing of the protocol surface: settings, the sandbox fixture, the case counter.

Profiles: the default runs a few thousand cases in well under a minute, derandomized so CI sees
the same cases every run; ``CNI_BRIDGE_FUZZ=long`` runs twenty times more, randomized, with the
example database on. The session ends with one ``fuzz (...): N cases run`` summary line
(``CNI_BRIDGE_FUZZ_REPORT=<file>`` also writes the figures as JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.sandbox import Sandbox, sandbox
from tests.fuzz.strategies import REPO_ROOT, examples, long_profile, register_reporter


def pytest_configure(config: pytest.Config) -> None:
    register_reporter(config)


def fuzz_settings(normal: int) -> Callable[[Any], Any]:
    """Hypothesis settings for one fuzz test: `normal` examples, x20 under CNI_BRIDGE_FUZZ=long."""
    long = long_profile()
    return settings(
        max_examples=examples(normal),
        deadline=None,
        derandomize=not long,
        database=DirectoryBasedExampleDatabase(str(REPO_ROOT / ".hypothesis" / "fuzz"))
        if long else None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Stubs and guards for the whole module (see sandbox.py); fails if a guard trip was left
    unreported (a test that sees one fails itself and clears it)."""
    root: Path = tmp_path_factory.mktemp("fuzz-sandbox")
    with sandbox(root) as b:
        yield b
    assert not b.trips, f"in-process fuzzing reached the system: {b.trips[:5]}"
