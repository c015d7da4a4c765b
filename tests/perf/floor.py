"""The start-up floor: a do-nothing program frozen with exactly our PyInstaller options.

Built once by ``build/build.sh --floor`` into ``dist/floor/`` and rebuilt when the build recipe
or the interpreter changes (a key beside it records what it was built from). What it costs to
start is what any program built this way costs; our VERSION answer is measured against it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = ("build/cni-bridge.spec", "build/build.sh", "build/floor_entry.py",
          "build/bootloader/build.sh", "build/bootloader/cni_handoff.c")


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return os.environ.get("PYTHON") or (str(venv) if venv.exists() else sys.executable)


def recipe_key(interpreter: str) -> str:
    digest = hashlib.sha256()
    for rel in RECIPE:
        digest.update((REPO / rel).read_bytes())
    version = subprocess.run([interpreter, "-c", "import sys, PyInstaller; "
                              "print(sys.version, PyInstaller.__version__)"],
                             capture_output=True, text=True, check=False).stdout
    digest.update(version.encode())
    return digest.hexdigest()


def ensure_floor(dist: Path = REPO / "dist") -> Path:
    """The floor executable, built first if missing or stale."""
    exe, key_file = dist / "floor" / "floor", dist / "floor" / ".recipe-key"
    interpreter = python()
    key = recipe_key(interpreter)
    if exe.exists() and key_file.exists() and key_file.read_text() == key:
        return exe
    print("building the start-up floor (build/build.sh --floor)", file=sys.stderr)
    subprocess.run(["bash", str(REPO / "build" / "build.sh"), "--floor"], check=True,
                   stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHON": interpreter, "DIST_DIR": str(dist)})
    key_file.write_text(key)
    return exe
