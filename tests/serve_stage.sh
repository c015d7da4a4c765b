#!/usr/bin/env bash
# The "served" stage of tests/run.sh: the bats suite and the integration suite again, with every
# plugin call handed to one `cni-bridge serve` listening on the default socket
# (/run/cni-bridge/serve.sock), which the plugins find without being told.
#
# The server runs inside a throwaway network namespace (cniserve-<pid>): it serves each caller by
# entering the caller's own namespaces, and the firewall healing it does in its own namespace
# touches nothing of the machine's. Afterwards the stage checks from the server's counters that
# every verb was really served, then stops the server and removes the namespace, also on failure
# or interruption.
#
# Integration tests rerun: a subset covering every verb (ADD, CHECK, DEL, GC, STATUS), every role,
# both firewall backends, concurrency, a store shared with the reference plugins, hostile input,
# the operator commands, a firewall flush and reconcile, and the crash trials (a plugin killed
# at a random moment: its served call stops with it). The whole suite passes served too
# (SERVED_TESTS=tests/integration) but takes as long again as the integration stage. Never
# rerun: the resident-mode tests, which start servers of their own.
#
# Environment: PLUGIN_DIR (default <repo>/dist/cni), PY (python with pytest), PYTEST_ARGS,
# BATS_ARGS, SERVED_TESTS (pytest paths, default the subset below).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGIN_DIR=${PLUGIN_DIR:-$REPO/dist/cni}
PY=${PY:-$REPO/.venv/bin/python}
CLI=$PLUGIN_DIR/cni-bridge
NS=cniserve-$$
WORK=$(mktemp -d /tmp/cniserve.XXXXXX)
LOG=$WORK/serve.log
server=
SUBSET=(test_bridge_check.py test_bridge_del.py test_bridge_gc_status.py test_bridge_concurrency.py
    test_portmap_lifecycle.py test_host_local_swap.py test_hostile_inputs.py
    test_operator_commands.py test_reliability_restart.py test_reliability_crash.py)
read -ra TESTS <<<"${SERVED_TESTS:-${SUBSET[*]/#/tests/integration/}}"

cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        wait "$server" 2>/dev/null
    fi
    ip netns del "$NS" 2>/dev/null
    echo "serve_stage: server log:"
    sed 's/^/    /' "$LOG" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unset CNI_BRIDGE_SOCKET  # the plugins use the default socket
if "$CLI" status --server >/dev/null 2>&1; then
    echo "serve_stage: a server already answers on the default socket; stop it first" >&2
    exit 1
fi
ip netns add "$NS" || exit 1
ip -n "$NS" link set lo up
CNI_BRIDGE_STATE_DIR=$WORK/state ip netns exec "$NS" "$CLI" serve >"$LOG" 2>&1 &
server=$!
for _ in $(seq 100); do
    "$CLI" status --server >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "serve_stage: the server exited" >&2; exit 1; }
    sleep 0.2
done
"$CLI" status --server || exit 1

failed=0
echo "==================== served: bats"
# shellcheck disable=SC2086  # word lists
PLUGIN_DIR=$PLUGIN_DIR bats ${BATS_ARGS:-} "$REPO/bats/" || failed=1
echo "==================== served: integration"
# shellcheck disable=SC2086
(cd "$REPO" && CNI_BRIDGE_PLUGIN_DIR=$PLUGIN_DIR "$PY" -m pytest "${TESTS[@]}" \
    --ignore-glob='tests/integration/test_serve_*' ${PYTEST_ARGS:-}) || failed=1

echo "==================== served: what the server ran"
"$CLI" status --server || failed=1
"$CLI" status --server --json | jq -c '.server | {served, refused, lost, abandoned}'
counts=$("$CLI" status --server --json | jq -c '.server.served')
for verb in ADD CHECK DEL GC STATUS; do
    if ! jq -e --arg v "$verb" '(.[$v] // 0) > 0' <<<"$counts" >/dev/null; then
        echo "serve_stage: no $verb call was served ($counts)" >&2
        failed=1
    fi
done
exit "$failed"
