"""The firewall's rooms, read from the source (imports inside functions count too): the two
backends never import each other, and the resident server's healer reaches the firewall only
through its interface, detection, model and records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_layers import PACKAGE_DIR as PACKAGE
from tests.unit.test_layers import arrows


@pytest.fixture(scope="module")
def imports() -> dict[Path, set[str]]:
    """Every cni_bridge module each module imports, by path (test_layers' reading of imports)."""
    found: dict[Path, set[str]] = {}
    for arrow in arrows(PACKAGE):
        found.setdefault(arrow.path, set()).add(arrow.imported)
    return found


def test_the_backends_do_not_import_each_other(imports: dict[Path, set[str]]) -> None:
    for own, other in (("nft", "iptables"), ("iptables", "nft")):
        for path in (PACKAGE / "firewall" / own).glob("*.py"):
            bad = {m for m in imports.get(path, set())
                   if m.startswith(f"cni_bridge.firewall.{other}")}
            assert not bad, f"{path.name} of firewall/{own} imports {sorted(bad)}"


def test_the_healer_imports_no_backend_internals(imports: dict[Path, set[str]]) -> None:
    allowed = {"cni_bridge.firewall.commands", "cni_bridge.firewall.detect",
               "cni_bridge.firewall.model", "cni_bridge.firewall.recorded",
               "cni_bridge.firewall.backend"}
    for name in ("heal.py", "restore.py"):
        path = PACKAGE / "serve" / "server" / name
        assert path in imports, f"serve/server/{name}: no such module, or it imports nothing"
        found = {m for m in imports[path] if m.startswith("cni_bridge.firewall")}
        assert found <= allowed, f"serve/server/{name} imports {sorted(found - allowed)}"
