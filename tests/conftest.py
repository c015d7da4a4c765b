"""Suite-wide settings shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

STATE_ENV = "CNI_BRIDGE_STATE_DIR"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Plugins record attachments under /run/cni-bridge by default; each test keeps its own."""
    path = tmp_path / "cni-bridge-state"
    monkeypatch.setenv(STATE_ENV, str(path))
    return path
