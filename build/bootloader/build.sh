#!/usr/bin/env bash
# PyInstaller's bootloader with cni-bridge's native hand-off (cni_handoff.c, and its protocol's
# constants generated from cni_bridge/serve/wire.py by wire_header.py) compiled in.
#
# Usage: build/bootloader/build.sh OUT_DIR      prints the path of the bootloader (`run`)
#
# Builds, from the source distribution of exactly the PyInstaller version installed for $PYTHON
# (fetched from PyPI, its SHA-256 checked against the index's), PyInstaller's own bootloader with one
# change: main() first calls cni_bridge_handoff() (cni_handoff.c), which hands a plugin call to a
# running `cni-bridge serve` before the interpreter starts, or returns. Everything else is
# PyInstaller's code, built with its own waf script (gcc and zlib headers needed). The result is
# cached in OUT_DIR under a key of the version and these files; a second run only prints the path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="$(realpath -m "${1:?usage: build.sh OUT_DIR}")"
PYTHON=${PYTHON:-python3}
if [[ $PYTHON == */* ]]; then  # absolute, without resolving a venv's symlink
    PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
fi

version=$("$PYTHON" -c 'import PyInstaller; print(PyInstaller.__version__)')
platform=$("$PYTHON" -c 'from PyInstaller import PLATFORM; print(PLATFORM)')
# The protocol's constants for the C side, generated from cni_bridge/serve/wire.py.
wire_header=$("$PYTHON" "$HERE/wire_header.py")
key=$( (cat "$HERE/cni_handoff.c" "$HERE/build.sh"; echo "$wire_header") | sha256sum | cut -c1-16)
target="$OUT_DIR/$version-$platform-$key/run"
if [[ -x $target ]]; then
    echo "$target"
    exit 0
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The sdist's address and digest from PyPI's simple index (JSON form); the archive must match.
"$PYTHON" - "$version" "$scratch/pyinstaller.tar.gz" <<'EOF' >&2
import hashlib, json, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
name = f"pyinstaller-{version}.tar.gz"
index = urllib.request.Request("https://pypi.org/simple/pyinstaller/",
                               headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(index, timeout=60) as r:
    files = [f for f in json.load(r)["files"] if f["filename"] == name]
if not files:
    raise SystemExit(f"{name} is not on PyPI")
with urllib.request.urlopen(files[0]["url"], timeout=120) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != files[0]["hashes"]["sha256"]:
    raise SystemExit(f"{files[0]['url']}: SHA-256 does not match PyPI's")
open(dest, "wb").write(data)
print(f"bootloader: {name}, {len(data)} bytes, SHA-256 checked")
EOF
tar -xzf "$scratch/pyinstaller.tar.gz" -C "$scratch"
src="$scratch/pyinstaller-$version/bootloader"
cp "$HERE/cni_handoff.c" "$src/src/"
echo "$wire_header" >"$src/src/cni_handoff_wire.h"
# The one change to PyInstaller's code: the hand-off before pyi_main() on POSIX.
"$PYTHON" - "$src/src/main.c" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
anchor = "    global_pyi_ctx->argv = argv;\n"
signature = "\nint\nmain(int argc, char **argv)"
if text.count(anchor) != 1 or text.count(signature) != 1:
    raise SystemExit(f"{path}: the POSIX main() is not where cni_handoff.c expects it")
text = text.replace(signature, "\nvoid cni_bridge_handoff(int argc, char **argv);\n" + signature)
text = text.replace(anchor, anchor + "    cni_bridge_handoff(argc, argv);\n")
open(path, "w").write(text)
EOF
(cd "$src" && "$PYTHON" ./waf configure build_release install_release >"$scratch/waf.log" 2>&1) || {
    tail -30 "$scratch/waf.log" >&2
    echo "bootloader: build failed" >&2
    exit 1
}
built="$scratch/pyinstaller-$version/PyInstaller/bootloader/$platform/run"
grep -q /run/cni-bridge/serve.sock "$built" || {
    echo "bootloader: $built lacks the hand-off" >&2
    exit 1
}
mkdir -p "$(dirname "$target")"
cp "$built" "$target.tmp" && mv "$target.tmp" "$target"
echo "$target"
