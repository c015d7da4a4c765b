"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cni_bridge.ipam.host_local.config import StoreLocation
from cni_bridge.ipam.host_local.file_store import FileStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileStore]:
    """host-local's file store of network ``net1`` under ``tmp_path/data`` (see `netdir`)."""
    s = FileStore.open(StoreLocation(str(tmp_path / "data"), "net1"), create=True)
    assert s is not None
    with s:
        yield s


def netdir(tmp_path: Path) -> Path:
    """The directory of the `store` fixture."""
    return tmp_path / "data" / "net1"
