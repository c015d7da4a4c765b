"""Write expected-<version>.json / .error for every case directory from the reference printer.

Usage: gen.py EMU RESULTS_DIR   (EMU is the binary built by build.sh)
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
emu, root = sys.argv[1], Path(sys.argv[2])
for case in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
    obj = json.loads((case / "input.json").read_text())
    meta = case / "meta.json"
    version = obj.get("cniVersion") or json.loads(meta.read_text())["version"]
    obj["cniVersion"] = version  # libcni's invoke adds the config's version when it is missing
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(obj, f)
    for old in case.glob("expected-*"):
        old.unlink()
    for v in VERSIONS:
        p = subprocess.run([emu, f.name, version, v], capture_output=True, check=False)
        if p.returncode == 0:
            (case / f"expected-{v}.json").write_bytes(p.stdout)
        elif p.returncode == 3:
            msg = p.stderr.decode().removeprefix("convert: ").strip()
            (case / f"expected-{v}.error").write_text(msg + "\n")
        else:
            sys.exit(f"{case.name} {v}: {p.stderr.decode()}")
    Path(f.name).unlink()
