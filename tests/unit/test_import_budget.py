"""VERSION's import budget: answered before anything but the version constants is imported.

(Every other call's import set is measured on the frozen build by
tests/integration/test_import_budget.py.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION_IMPORTS = ["cni_bridge", "cni_bridge.cni", "cni_bridge.cni.supported", "cni_bridge.entry"]


def imported_by(argv0: str, env: dict[str, str]) -> list[str]:
    """The modules a fresh interpreter imports to run the executable's main() as `argv0`."""
    code = (
        "import sys, atexit; base = set(sys.modules); "
        f"sys.path.insert(0, {str(REPO)!r}); sys.argv[0] = {argv0!r}; "
        "atexit.register(lambda: sys.stderr.write('\\nIMPORTED ' + "
        "repr(sorted(set(sys.modules) - base)))); "
        "from cni_bridge.entry import main; main()"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    line = proc.stderr.rsplit("\nIMPORTED ", 1)[-1]
    return list(ast.literal_eval(line))


def test_version_imports_only_the_version_constants() -> None:
    assert imported_by("/opt/cni/bin/portmap", {"CNI_COMMAND": "VERSION"}) == VERSION_IMPORTS


def test_a_version_call_with_a_call_log_takes_the_full_path(tmp_path: Path) -> None:
    modules = imported_by("bridge", {"CNI_COMMAND": "VERSION",
                                     "CNI_BRIDGE_LOG": str(tmp_path / "log")})
    assert "cni_bridge.cni.dispatch" in modules and (tmp_path / "log").exists()
