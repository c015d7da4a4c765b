#!/usr/bin/env bash
# Freeze cni-bridge with PyInstaller and assemble dist/cni/, a directory usable as CNI_PATH as it
# is: the executable `cni-bridge` plus relative symlinks `bridge`, `host-local`, `portmap`,
# `loopback` to it
# (the role comes from basename(argv[0]); the bootloader follows the symlink to find its files).
#
# Usage: build/build.sh [--onedir | --onefile] [--floor] [--clean]
#   --onedir   (default) executable + _internal/ directory; fastest start-up
#   --onefile  one self-extracting file (unpacks to a temp dir on every call: +35% CPU and
#              +45% wall time per plugin call, tests/perf/startup.py)
#   --floor    the start-up floor instead: a do-nothing program frozen with the same options
#              -> $DIST_DIR/floor/floor (tests/perf/bench.py builds and times it)
#   --clean    drop PyInstaller's cache first
# Environment:
#   PYTHON     interpreter with PyInstaller installed (default: .venv/bin/python, else python3)
#   DIST_DIR   output parent (default: <repo>/dist); the result is $DIST_DIR/cni
#   WORK_DIR   PyInstaller work files (default: <repo>/.pyi-work); never under build/
#   CNI_BRIDGE_FREEZE_NATIVE_HANDOFF=0  PyInstaller's own bootloader instead of ours with the
#              native hand-off (build/bootloader/; needs gcc, zlib headers and PyPI once)
#   CNI_BRIDGE_FREEZE_*  measurement switches read by cni-bridge.spec (STARTUP_CACHE=0,
#              NOARCHIVE=0, STRIP=0, PYTHON_OPTIONS="X importtime")
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=onedir
FLOOR=0
CLEAN=()
for arg in "$@"; do
    case $arg in
        --onedir) MODE=onedir ;;
        --onefile) MODE=onefile ;;
        --floor) FLOOR=1 ;;
        --clean) CLEAN=(--clean) ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
DIST_DIR="$(realpath -m "${DIST_DIR:-$REPO/dist}")"
WORK_DIR="$(realpath -m "${WORK_DIR:-$REPO/.pyi-work}")"
case $WORK_DIR/ in
    "$REPO/build/"*) echo "build.sh: WORK_DIR must not be under build/" >&2; exit 2 ;;
esac

STAGE="$WORK_DIR/$MODE"
((FLOOR)) && STAGE="$WORK_DIR/floor-$MODE"
mkdir -p "$STAGE" "$DIST_DIR"
cd "$REPO"

# Store the PYZ modules uncompressed (when the archive is used: CNI_BRIDGE_FREEZE_NOARCHIVE=0
# or --onefile): zlib level 0 saved ~7 ms CPU per start (80 vs 86 ms for VERSION, n=60) for
# 5 MB more on disk. PyInstaller's cache does not notice a level change, so a
# change forces --clean.
export PYINSTALLER_ZLIB_COMPRESSION_LEVEL=${PYINSTALLER_ZLIB_COMPRESSION_LEVEL:-0}
if [[ $(cat "$STAGE/zlib-level" 2>/dev/null) != "$PYINSTALLER_ZLIB_COMPRESSION_LEVEL" ]]; then
    CLEAN=(--clean)
    rm -rf "$STAGE/work"
fi

# PyInstaller's bootloader with the native hand-off compiled in (build/bootloader/build.sh;
# CNI_BRIDGE_FREEZE_NATIVE_HANDOFF=0: PyInstaller's own, and the hand-off only in Python).
BOOTLOADER=
if [[ ${CNI_BRIDGE_FREEZE_NATIVE_HANDOFF:-1} != 0 ]]; then
    BOOTLOADER=$(PYTHON=$PYTHON bash "$REPO/build/bootloader/build.sh" "$WORK_DIR/bootloader")
fi

echo "build.sh: freezing ($MODE$( ((FLOOR)) && echo ", floor")) with $("$PYTHON" -m PyInstaller --version 2>/dev/null || echo '?')"
CNI_BRIDGE_FREEZE_MODE=$MODE CNI_BRIDGE_FREEZE_FLOOR=$FLOOR CNI_BRIDGE_FREEZE_BOOTLOADER=$BOOTLOADER \
    "$PYTHON" -m PyInstaller --noconfirm --log-level WARN "${CLEAN[@]}" \
    --workpath "$STAGE/work" --distpath "$STAGE/dist" build/cni-bridge.spec

echo "$PYINSTALLER_ZLIB_COMPRESSION_LEVEL" >"$STAGE/zlib-level"

if ((FLOOR)); then
    rm -rf "$DIST_DIR/floor.new"
    if [[ $MODE == onedir ]]; then
        cp -a "$STAGE/dist/floor" "$DIST_DIR/floor.new"
    else
        mkdir -p "$DIST_DIR/floor.new" && cp -a "$STAGE/dist/floor" "$DIST_DIR/floor.new/floor"
    fi
    rm -rf "$DIST_DIR/floor" && mv "$DIST_DIR/floor.new" "$DIST_DIR/floor"
    echo "build.sh: $DIST_DIR/floor/floor ($MODE)"
    exit 0
fi

# Assemble next to the target, then swap, so dist/cni is never half-written.
NEW="$DIST_DIR/.cni.new.$$"
rm -rf "$NEW"
if [[ $MODE == onedir ]]; then
    cp -a "$STAGE/dist/cni" "$NEW"
else
    mkdir -p "$NEW"
    cp -a "$STAGE/dist/cni-bridge" "$NEW/cni-bridge"
fi
touch "$NEW/cni-bridge"   # build time, for staleness checks (cp -a kept PyInstaller's mtime)
# The roles are the package's own list (the names runtimes look for), linked to the executable.
read -r -a ROLES <<<"$(cd "$REPO" && "$PYTHON" -c 'from cni_bridge import PLUGIN_ROLES; print(*PLUGIN_ROLES)')"
for role in "${ROLES[@]}"; do
    ln -s cni-bridge "$NEW/$role"
done
if [[ $MODE == onedir ]]; then
    # The build digest: a plugin hands its call only to a `cni-bridge serve` of the same bundle
    # (cni_bridge/serve/wire.py). The one-file build has no place for it: it never hands over.
    "$PYTHON" -c 'import sys; from pathlib import Path; from cni_bridge.deploy.install import bundle_digest
print(bundle_digest(Path(sys.argv[1])))' "$NEW" >"$NEW/_internal/cni_bridge_build_digest"
fi
"$NEW/cni-bridge" --help >/dev/null   # the operator CLI starts (runs no plugin code)
rm -rf "$DIST_DIR/cni"
mv "$NEW" "$DIST_DIR/cni"

size=$(du -sh "$DIST_DIR/cni" | cut -f1)
echo "build.sh: $DIST_DIR/cni ($MODE, $size): cni-bridge ${ROLES[*]}"
