# Suite-level guard rails (bats runs this once around all files in bats/).
#
# setup_suite: checks root and the plugin dir, learns from the plugins' VERSION answer whether
# they are the reference plugins (no cniVersion 1.1.0), builds the libcni client if it is
# missing, and snapshots the machine's own network namespace (read only).
# teardown_suite: fails if a test left a namespace with this run's prefix (and removes it), or
# if the machine's own namespace or /var/lib/cni changed.

load helpers

host_snapshot() {
    echo "## links"
    ip -j link show | jq -r '.[] | [.ifname, .link_type, (.flags | sort | join(",")), .master // ""] | @tsv'
    echo "## addresses"
    ip -j addr show | jq -r '.[] | .ifname as $i | .addr_info[] | select(.scope != "link")
        | [$i, .local, (.prefixlen | tostring)] | @tsv'
    echo "## routes"
    for fam in -4 -6; do
        ip -j "$fam" route show table all \
            | jq -r '.[] | [.type // "", .dst, .gateway // "", .dev // "", (.table // "main" | tostring)] | @tsv' \
            | grep -v '^local\|^multicast\|^broadcast\|	fe80::\|	ff00::' | sort
    done
    echo "## iptables"
    for t in iptables-save ip6tables-save; do
        command -v "$t" >/dev/null && "$t" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
    done
    echo "## nft"
    command -v nft >/dev/null && nft -s list ruleset 2>/dev/null
    echo "## /var/lib/cni"
    find /var/lib/cni 2>/dev/null | sort
}

setup_suite() {
    IFS=$' \t\n'
    if [[ $EUID -ne 0 ]]; then
        echo "the bats suite must run as root (it creates network namespaces)" >&2
        return 1
    fi
    local p
    for p in "${PLUGINS[@]}"; do
        if [[ ! -x $PLUGIN_DIR/$p ]]; then
            echo "missing $PLUGIN_DIR/$p: build first (build/build.sh) or set PLUGIN_DIR" >&2
            return 1
        fi
    done

    host_snapshot >"$BATS_RUN_TMPDIR/host-before.txt"

    # Learn the plugins' highest cniVersion, in a scratch namespace.
    local ns="${CNIBATS_PREFIX}-suite" out
    ip netns add "$ns"
    out=$(ip netns exec "$ns" env -i CNI_COMMAND=VERSION "$PLUGIN_DIR/bridge" </dev/null) || true
    ip netns del "$ns"
    if jq -e '.supportedVersions | index("1.1.0")' <<<"$out" >/dev/null 2>&1; then
        export PLUGIN_IS_REFERENCE=0 PLUGIN_CNI_VERSION=1.1.0
    else
        export PLUGIN_IS_REFERENCE=1
        PLUGIN_CNI_VERSION=$(jq -r '.supportedVersions[-1] // "1.0.0"' <<<"$out" 2>/dev/null || echo 1.0.0)
        export PLUGIN_CNI_VERSION
    fi
    echo "# PLUGIN_DIR=$PLUGIN_DIR reference=$PLUGIN_IS_REFERENCE cniVersion=$PLUGIN_CNI_VERSION" >&3

    if [[ ! -x $LIBCNI_CLIENT ]] && command -v go >/dev/null; then
        mkdir -p "$(dirname "$LIBCNI_CLIENT")"
        (cd "$REPO_ROOT" && GOPATH=/usr/share/gocode GO111MODULE=off \
            GOCACHE="${GOCACHE:-$BATS_RUN_TMPDIR/gocache}" \
            go build -o "$LIBCNI_CLIENT" ./bats/libcni-client) >&2 || true
    fi
}

teardown_suite() {
    local leaked rc=0
    # Namespaces of this run that a test's teardown failed to remove (other runs' are not ours).
    leaked=$(ip netns list | awk '{print $1}' | grep "^${CNIBATS_PREFIX}-" || true)
    if [[ -n $leaked ]]; then
        echo "namespaces left behind by tests (now removed):" $leaked >&2
        rc=1
    fi
    netns_remove_prefix "$CNIBATS_PREFIX"
    host_snapshot >"$BATS_RUN_TMPDIR/host-after.txt"
    if ! diff -u "$BATS_RUN_TMPDIR/host-before.txt" "$BATS_RUN_TMPDIR/host-after.txt" >&2; then
        echo "the machine's own network namespace or /var/lib/cni changed during the suite" >&2
        rc=1
    fi
    return "$rc"
}
