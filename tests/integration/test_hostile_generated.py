"""Generated invalid calls through the real executables: the frozen build when
CNI_BRIDGE_PLUGIN_DIR is set (tests/run.sh sets it), else launchers running the source tree.

The generators are the fuzz suite's (tests/fuzz/strategies.py, ``invalid_case``): bad
environments, undecodable or hostile stdin, configs each role must refuse. Every call runs in
the throwaway "H" namespace with the data dir, state dir and working directory in a temp tree;
calls go in parallel batches, and after each batch the tree, H's network state and the machine's
default state dirs must be unchanged. Per call: the output contract (one JSON document, a
``{code, msg}`` error), a failure, and no traceback on stdout or stderr.

Sizes: 75 calls per role (225 in all) by default; ``CNI_BRIDGE_FUZZ=long`` runs ten times more.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.strategies import (
    REPO_ROOT,
    STATS,
    Case,
    ContractError,
    examples,
    expect_failure,
    has_nul_in_env,
    invalid_case,
    long_profile,
    register_reporter,
)
from tests.integration.test_hostile_helpers import Raw, World, world

__all__ = ["world"]  # fixture

ROLES = ("bridge", "host-local", "portmap")
BATCH = 25
WORKERS = min(8, (os.cpu_count() or 2) * 2)  # calls mostly wait on process start
SUITE = "executables (frozen)" if os.environ.get("CNI_BRIDGE_PLUGIN_DIR") else "executables"


@pytest.fixture(autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    register_reporter(request.config)


def run_one(world: World, case: Case) -> tuple[Case, Raw | None, str]:
    case = case.with_data_dir(str(world.data_dir))
    try:
        raw = world.call(case.role, case.env, case.stdin, case.why)
    except ContractError as exc:
        return case, None, str(exc)
    STATS.record(SUITE, raw.checked)
    if "Traceback (most recent call last)" in raw.stderr:
        STATS.violations["traceback"] += 1
        return case, raw, f"a traceback on stderr\n{case.describe()}\n{raw.stderr[-3000:]}"
    try:
        expect_failure(case, raw.checked)
    except ContractError as exc:
        return case, raw, str(exc)
    return case, raw, ""


@pytest.mark.parametrize("role", ROLES)
def test_generated_invalid_calls(world: World, role: str) -> None:
    batches = max(1, examples(75, long_factor=10) // BATCH)
    cases = st.lists(invalid_case(role).filter(lambda c: not has_nul_in_env(c)),
                     min_size=BATCH, max_size=BATCH)

    # The long profile is randomized: keep its failing batches so the next run replays them.
    database = (DirectoryBasedExampleDatabase(str(REPO_ROOT / ".hypothesis" / "hostile"))
                if long_profile() else None)

    @settings(max_examples=batches, deadline=None, derandomize=not long_profile(),
              database=database, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(batch=cases)
    def check_batch(batch: list[Case]) -> None:
        before = world.snapshot()
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(lambda c: run_one(world, c), batch))
        problems = [why for _, _, why in results if why]
        assert not problems, f"{len(problems)} of {len(batch)} calls broke the contract:\n" + \
            "\n\n".join(problems[:3])
        changes = before.diff(world.snapshot())
        if changes:
            STATS.violations["outside_data_dir"] += 1
        assert not changes, "a batch of invalid calls changed something:\n" + "\n".join(changes)

    check_batch()
