# A small Kubernetes-style cluster in network namespaces, host-gw style (as flannel's host-gw
# backend does it): no overlay, each node routes the other nodes' pod CIDRs via their addresses.
#
#   U        the underlay: bridge ul0, nothing else
#   N1..N3   nodes: eth0 203.0.113.K/24 on ul0; pod CIDR 10.244.K.0/24 (cluster CIDR
#            10.244.0.0/16); a route to every other node's pod CIDR via that node's address;
#            default route via O. The plugins run here.
#   O        outside: eth0 203.0.113.100/24 on ul0 and no route beyond it, so no packet leaves
#            the test's namespaces; masqueraded pod traffic ends here.
#   pods     namespaces attached by the conflist runner with each node's network.
#
# Each node's network is written by `cni-bridge install --subnet` (ours, whatever PLUGIN_DIR
# says) with its data dir moved under the test's tmp dir; the plugins that run are the ones the
# install put into the bin dir, or PLUGIN_DIR when that holds the reference plugins. Node 3 uses
# the iptables backend, nodes 1 and 2 nftables.

UNDERLAY=203.0.113
OUT_IP=$UNDERLAY.100
CLUSTER_CIDR=10.244.0.0/16
NODE_COUNT=3
MANIFEST="$REPO_ROOT/conf/deploy/kubernetes/cni-bridge-install.yaml"
CNI_BRIDGE_EXE="$REPO_ROOT/dist/cni/cni-bridge"

pod_cidr() { echo "10.244.$1.0/24"; }
node_ip() { echo "$UNDERLAY.$1"; }
node_dir() { echo "$BATS_TEST_TMPDIR/node$1"; }
node_conflist() { echo "$(node_dir "$1")/net.d/10-cni-bridge.conflist"; }

# cluster_setup: the underlay, O and the nodes with their routes (no network written yet).
cluster_setup() {
    require_root
    [[ -x $CNI_BRIDGE_EXE ]] || fail "no frozen build at $CNI_BRIDGE_EXE (build/build.sh)"
    U=$(netns_create U) || fail "cannot create U"
    O=$(netns_create O) || fail "cannot create O"
    ip -n "$U" link add ul0 type bridge && ip -n "$U" link set ul0 up || fail "no underlay"
    underlay_attach "$O" o "$OUT_IP"
    declare -ga NODES=("")
    local k j
    for ((k = 1; k <= NODE_COUNT; k++)); do
        NODES[k]=$(netns_create "N$k") || fail "cannot create node $k"
        underlay_attach "${NODES[k]}" "n$k" "$(node_ip "$k")"
        ip -n "${NODES[k]}" route add default via "$OUT_IP"
        mkdir -p "$(node_dir "$k")/cache"
    done
    for ((k = 1; k <= NODE_COUNT; k++)); do
        for ((j = 1; j <= NODE_COUNT; j++)); do
            ((j == k)) || ip -n "${NODES[k]}" route add "$(pod_cidr "$j")" via "$(node_ip "$j")"
        done
    done
    export CNI_BRIDGE_STATE_DIR="$BATS_TEST_TMPDIR/state"
    BIN_DIR="$BATS_FILE_TMPDIR/bin"  # one install for the file: later ones reuse the bundle
    declare -gA SERVER_PIDS=()
}

cluster_teardown() {
    local pid k
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -z ${BATS_TEST_COMPLETED:-} && -z ${BATS_TEST_SKIPPED:-} ]]; then
        for ((k = 1; k < ${#NODES[@]}; k++)); do dump_state "${NODES[k]}"; done
    fi
    netns_remove_prefix "$(test_prefix)"
}

# underlay_attach NS NAME ADDRESS: NS's eth0 (ADDRESS/24) on the underlay bridge as port NAME.
underlay_attach() {
    local ns=$1 port=$2 address=$3
    ip -n "$U" link add "$port" type veth peer name eth0 netns "$ns" || fail "cannot attach $ns"
    ip -n "$U" link set "$port" master ul0 up
    ip -n "$ns" addr add "$address/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# node_install K [install args...]: `cni-bridge install --subnet` on node K (default: its pod
# CIDR inside the cluster CIDR); $output/$status as bats' run.
node_install() {
    local k=$1
    shift
    (($#)) || set -- --subnet "$(pod_cidr "$k")" --cluster-cidr "$CLUSTER_CIDR"
    guard_not_init_netns "${NODES[k]}"
    run --separate-stderr ip netns exec "${NODES[k]}" "$CNI_BRIDGE_EXE" install \
        --bin-dir "$BIN_DIR" --conf-dir "$(node_dir "$k")/net.d" \
        --cni-version "$PLUGIN_CNI_VERSION" "$@"
    echo "# install on node $k: status $status: $output $stderr" >&2
}

# node_network K [install args...]: install node K's network, then keep its data under the
# test's tmp dir (node 3: the iptables backend).
node_network() {
    local k=$1 conf filter
    node_install "$@"
    assert_success
    conf=$(node_conflist "$k")
    filter='.plugins[0].ipam.dataDir = $dd'
    ((k == 3)) && filter+=' | .plugins[0].ipMasqBackend = "iptables" | .plugins[1].backend = "iptables"'
    jq --arg dd "$(node_dir "$k")/ipam" "$filter" "$conf" >"$conf.new" && mv "$conf.new" "$conf"
}

cluster_networks() {
    local k
    for ((k = 1; k <= NODE_COUNT; k++)); do node_network "$k"; done
}

plugins_of_nodes() { if is_reference; then echo "$PLUGIN_DIR"; else echo "$BIN_DIR"; fi; }

# pod VERB K NAME [CAP_JSON]: run the node's network list for pod NAME on node K through the
# conflist runner (ADD creates the pod's namespace first; its name is in POD[NAME]). The
# capability args given to ADD are passed again to DEL, as runtimes do.
pod() {
    local verb=$1 k=$2 name=$3 cap=${4:-${POD_CAP[$3]:-"{}"}}
    if [[ $verb == add && -z ${POD[$name]:-} ]]; then
        POD[$name]=$(netns_create "$name") || fail "cannot create pod $name"
    fi
    [[ $verb == add ]] && POD_CAP[$name]=$cap
    guard_not_init_netns "${NODES[k]}"
    run --separate-stderr timeout -k 5 90 "$PYTHON3" "$RUNNER" "$verb" \
        --conflist "$(node_conflist "$k")" --cache "$(node_dir "$k")/cache" \
        --plugin-dir "$(plugins_of_nodes)" --host-ns "${NODES[k]}" --id "$name" \
        --netns "$(netns_path "${POD[$name]}")" --cap "$cap"
    echo "# pod $verb node $k $name: status $status: $output $stderr" >&2
    assert_success
}
declare -gA POD=() POD_CAP=()

# node_leftovers K: what the plugins left on node K: bridge ports, reservations, firewall
# entries naming a pod address; empty when nothing is left.
node_leftovers() {
    local k=$1 H=${NODES[$1]} DATA_DIR net  # H and DATA_DIR: for the helpers called below
    DATA_DIR="$(node_dir "$k")/ipam"
    host_veths | sed 's/^/veth /'
    for net in "$DATA_DIR"/*/; do
        net=${net%/}
        reservations "${net##*/}" | sed 's/ .*//; s/^/reservation /'
    done
    fw_dump | grep -oE '10\.244\.[0-9]+\.[0-9]+(/32)?([^0-9/]|$)' | sed 's/^/rule /' | sort -u
}
