"""The firewall's rooms, read from the source (imports inside functions count too): the two
backends never import each other, and the resident server's healer reaches the firewall only
through its interface, detection, model and records."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cni_bridge"


def imports_of(path: Path) -> set[str]:
    """Every cni_bridge module `path` imports (``from a import b`` counts as ``a.b`` when that
    is a module, else as ``a``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
        if isinstance(node, ast.ImportFrom) and module.startswith("cni_bridge"):
            for alias in node.names:
                full = f"{module}.{alias.name}"
                as_path = PACKAGE.parent / full.replace(".", "/")
                out.add(full if as_path.with_suffix(".py").exists() or as_path.is_dir()
                        else module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cni_bridge")}
    return out


def test_the_backends_do_not_import_each_other() -> None:
    for own, other in (("nft", "iptables"), ("iptables", "nft")):
        for path in (PACKAGE / "firewall" / own).glob("*.py"):
            bad = {m for m in imports_of(path) if m.startswith(f"cni_bridge.firewall.{other}")}
            assert not bad, f"{path.name} of firewall/{own} imports {sorted(bad)}"


def test_the_healer_imports_no_backend_internals() -> None:
    allowed = {"cni_bridge.firewall.commands", "cni_bridge.firewall.detect",
               "cni_bridge.firewall.model", "cni_bridge.firewall.recorded",
               "cni_bridge.firewall.backend"}
    for name in ("heal.py", "restore.py"):
        found = {m for m in imports_of(PACKAGE / "serve" / "server" / name)
                 if m.startswith("cni_bridge.firewall")}
        assert found <= allowed, f"serve/server/{name} imports {sorted(found - allowed)}"
