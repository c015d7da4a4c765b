#!/usr/bin/env bash
# Prepare a machine (fresh Debian 12 or a developer box) to run the tests. Idempotent: each step
# is skipped when its result is already there and up to date.
#
#   1. Debian packages the suites use (apt-get only when one is missing; needs root then)
#   2. .venv in the repo with `pip install -e '.[test,build]'`
#   3. the libcni client (Go, GOPATH mode against Debian's libcni) -> dist/tools/libcni-client
#   4. the frozen plugins (build/build.sh) -> dist/cni
#
# Environment:
#   PYTHON            interpreter for the venv (default python3; must be >= 3.11)
#   CNI_BRIDGE_VENV   use this existing virtualenv instead of .venv (not modified when it
#                     already provides cni-bridge's dependencies)
#   FORCE_BUILD=1     rebuild the client and the frozen plugins even when up to date
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "setup.sh: $*"; }

DEBIAN_PACKAGES=(
    iproute2 iptables nftables conntrack jq
    bats bats-assert bats-support bats-file podman runc busybox-static python3-yaml
    containernetworking-plugins golang-go golang-github-appc-cni-dev containerd python3-grpcio
    python3 python3-venv libpython3.11 binutils ca-certificates time gcc libc6-dev zlib1g-dev
    systemd
)

# --- 1. Debian packages ------------------------------------------------------------------------
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        log "missing Debian packages (run as root to install): ${missing[*]}" >&2
        exit 1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

# --- 2. virtualenv -----------------------------------------------------------------------------
if [[ -n ${CNI_BRIDGE_VENV:-} ]]; then
    VENV=$CNI_BRIDGE_VENV
else
    VENV=$REPO/.venv
fi
PY=$VENV/bin/python
if [[ ! -x $PY ]]; then
    base=${PYTHON:-python3}
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { log "$base is older than 3.11" >&2; exit 1; }
    log "creating $VENV with $("$base" --version)"
    "$base" -m venv "$VENV"
fi
stamp=$VENV/.cni-bridge-install.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
deps_ok() { "$PY" -c 'import pyroute2, pytest, hypothesis, mypy, ruff, PyInstaller' 2>/dev/null; }
if [[ -n ${CNI_BRIDGE_VENV:-} ]] && deps_ok; then
    log "using $VENV as it is"
elif [[ -f $stamp && $(cat "$stamp") == "$want" ]] && deps_ok; then
    log "$VENV up to date"
else
    log "pip install -e '.[test,build]' into $VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e '.[test,build]'
    echo "$want" >"$stamp"
fi

# newer_than TARGET PATH...: true when TARGET is missing or any file under PATH is newer.
newer_than() {
    local target=$1
    shift
    [[ ${FORCE_BUILD:-0} == 1 || ! -e $target ]] && return 0
    [[ -n $(find "$@" -newer "$target" -type f ! -name '*.pyc' -print -quit 2>/dev/null) ]]
}

# --- 3. libcni client --------------------------------------------------------------------------
CLIENT=$REPO/dist/tools/libcni-client
if newer_than "$CLIENT" bats/libcni-client; then
    log "building $CLIENT"
    mkdir -p "$(dirname "$CLIENT")" "$REPO/.pyi-work/gocache"
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$REPO/.pyi-work/gocache" \
        go build -o "$CLIENT" ./bats/libcni-client
else
    log "$CLIENT up to date"
fi

# --- 4. frozen plugins -------------------------------------------------------------------------
if newer_than "$REPO/dist/cni/cni-bridge" cni_bridge build pyproject.toml; then
    PYTHON=$PY build/build.sh
else
    log "dist/cni up to date"
fi
