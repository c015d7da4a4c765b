#!/usr/bin/env bash
# Start-up measurement behind the freezing defaults: builds onedir and onefile into a temp dir
# and compares them, and the source tree run by the interpreter, call by call with
# tests/perf/startup.py (VERSION, ADD, CHECK, DEL in throwaway namespaces). Needs root.
# Usage: build/measure.sh [N]   (default 30)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${1:-30}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
TMP=$(mktemp -d /tmp/cni-bridge-measure.XXXXXX)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

for mode in onedir onefile; do
    DIST_DIR=$TMP/$mode WORK_DIR=$TMP/work PYTHON=$PYTHON "$REPO/build/build.sh" --$mode >/dev/null
done
# The source tree, run under each plugin name so the roles are the same as the frozen calls.
mkdir -p "$TMP/source"
for role in bridge host-local portmap; do
    printf '#!%s\nimport sys\nsys.path.insert(0, %s)\nfrom cni_bridge.entry import main\nmain()\n' \
        "$PYTHON" "'$REPO'" >"$TMP/source/$role"
    chmod +x "$TMP/source/$role"
done

"$PYTHON" "$REPO/tests/perf/startup.py" -n "$N" \
    "onedir=$TMP/onedir/cni" "onefile=$TMP/onefile/cni" "source=$TMP/source"
