#!/usr/bin/env bash
# The one test command. Stages, in order:
#   setup        tests/setup.sh (packages, venv, libcni client, frozen build)
#   lint         ruff and mypy
#   unit         pytest tests/unit tests/fuzz (no root needed)
#   integration  pytest tests/integration, as root, against the frozen build
#                (CNI_BRIDGE_PLUGIN_DIR=dist/cni)
#   bats         bats bats/ with PLUGIN_DIR=dist/cni, as root
#   served       bats and integration again, every call handed to one `cni-bridge serve`
#                (tests/serve_stage.sh), as root
# pytest's exit code 5 (no tests collected) counts as success for a stage. Exits non-zero if
# any stage failed; prints one summary line per stage at the end.
#
# Environment: CNI_BRIDGE_VENV (see tests/setup.sh), PYTEST_ARGS (extra pytest arguments),
# BATS_ARGS (extra bats arguments, e.g. "--jobs 2" when GNU parallel is installed),
# STAGE_TIMEOUT (seconds per test stage, default 600: a hung stage fails instead of eating the
# CI budget).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY=${CNI_BRIDGE_VENV:-$REPO/.venv}/bin/python
PLUGIN_DIR=$REPO/dist/cni

STAGE_TIMEOUT=${STAGE_TIMEOUT:-600}
summary=()
failed=0

# stage NAME COMMAND...: run, time, record "PASS"/"FAIL (exit N)"
stage() {
    local name=$1 start rc verdict
    shift
    echo
    echo "==================== $name: $*"
    start=$(date +%s%N)
    "$@"
    rc=$?
    if [[ $name == unit || $name == integration ]] && ((rc == 5)); then
        verdict="PASS (no tests collected)"
    elif ((rc == 124 || rc == 137)) && [[ $1 == timeout ]]; then
        verdict="FAIL (timeout ${STAGE_TIMEOUT}s)"
        failed=1
    elif ((rc == 0)); then
        verdict=PASS
    else
        verdict="FAIL (exit $rc)"
        failed=1
    fi
    local ms=$((($(date +%s%N) - start) / 1000000))
    summary+=("$(printf '%-12s %-28s %4d.%01ds' "$name" "$verdict" $((ms / 1000)) $((ms % 1000 / 100)))")
    return "$rc"
}

print_summary() {
    echo
    echo "==================== summary"
    printf 'run.sh: %s\n' "${summary[@]}"
    if ((failed)); then echo "run.sh: FAILED"; else echo "run.sh: OK"; fi
}

root_or_skip() {
    if [[ $EUID -ne 0 ]]; then
        if [[ ${CI:-} == true ]]; then
            echo "$1 needs root" >&2
            return 1
        fi
        echo "$1 needs root: skipped"
        summary+=("$(printf '%-12s %-28s' "$1" "SKIP (needs root)")")
        return 2
    fi
}

if ! stage setup bash tests/setup.sh; then
    print_summary
    exit 1
fi

stage lint bash -c "'$PY' -m ruff check cni_bridge tests build && '$PY' -m mypy cni_bridge"

# shellcheck disable=SC2086  # PYTEST_ARGS / BATS_ARGS are word lists
stage unit timeout -k 30 "$STAGE_TIMEOUT" "$PY" -m pytest tests/unit tests/fuzz ${PYTEST_ARGS:-}

root_or_skip integration
case $? in
    0) stage integration timeout -k 30 "$STAGE_TIMEOUT" env CNI_BRIDGE_PLUGIN_DIR="$PLUGIN_DIR" \
        "$PY" -m pytest tests/integration ${PYTEST_ARGS:-} ;;
    1) summary+=("integration  FAIL (not root)"); failed=1 ;;
esac

root_or_skip bats
case $? in
    0) stage bats timeout -k 30 "$STAGE_TIMEOUT" env PLUGIN_DIR="$PLUGIN_DIR" bats ${BATS_ARGS:-} bats/ ;;
    1) summary+=("bats         FAIL (not root)"); failed=1 ;;
esac

root_or_skip served
case $? in
    0) stage served timeout -k 30 "$((2 * STAGE_TIMEOUT))" env PLUGIN_DIR="$PLUGIN_DIR" PY="$PY" \
        bash tests/serve_stage.sh ;;
    1) summary+=("served       FAIL (not root)"); failed=1 ;;
esac

print_summary
exit "$failed"
