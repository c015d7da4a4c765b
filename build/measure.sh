#!/usr/bin/env bash
# Start-up measurement behind the freezing defaults: builds onedir and onefile into a temp dir
# and reports the median wall time of N VERSION calls of each (and of the source tree run by
# the interpreter), inside a scratch network namespace. Needs root (ip netns).
# Usage: build/measure.sh [N]   (default 30)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${1:-30}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
TMP=$(mktemp -d /tmp/cni-bridge-measure.XXXXXX)
NS=cnimeasure-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

for mode in onedir onefile; do
    DIST_DIR=$TMP/$mode WORK_DIR=$TMP/work PYTHON=$PYTHON "$REPO/build/build.sh" --$mode >/dev/null
done
# The source tree, run under a plugin name so the role is the same as the frozen calls.
printf '#!%s\nimport sys\nsys.path.insert(0, %s)\nfrom cni_bridge.cli import main\nmain()\n' \
    "$PYTHON" "'$REPO'" >"$TMP/bridge"
chmod +x "$TMP/bridge"

ip netns add "$NS"
cd "$REPO"
ip netns exec "$NS" "$PYTHON" "$REPO/build/measure_startup.py" "$N" \
    "onedir=$TMP/onedir/cni/bridge" \
    "onefile=$TMP/onefile/cni/bridge" \
    "source=$TMP/bridge" \
    "source(python -m)=$PYTHON -m cni_bridge version"
