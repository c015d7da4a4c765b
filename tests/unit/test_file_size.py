"""Size limits: no module over MAX_FILE_LINES, and the whole package within LINE_BUDGET."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "cni_bridge"
MAX_FILE_LINES = 400
# A ratchet, not a goal: the redesign took the package from 18,737 lines to under this; the
# goal it set was 16,000. Lower it when the package shrinks; raising it is a decision.
LINE_BUDGET = 17_000


def line_counts() -> dict[Path, int]:
    return {path: len(path.read_bytes().splitlines())
            for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_no_module_over_the_file_limit() -> None:
    too_long = [f"{path.relative_to(PACKAGE_DIR.parent)}: {lines} lines"
                for path, lines in line_counts().items() if lines > MAX_FILE_LINES]
    assert not too_long, f"over {MAX_FILE_LINES} lines (split by job): {too_long}"


def test_the_package_within_its_line_budget() -> None:
    total = sum(line_counts().values())
    assert total <= LINE_BUDGET, f"cni_bridge/ has {total} lines; the budget is {LINE_BUDGET}"
