# A small Kubernetes cluster in network namespaces, deployed as conf/deploy/kubernetes/
# cni-bridge.yaml deploys it: no overlay, each node's agent routes the other nodes' pod CIDRs
# via their InternalIPs. The test adds no route between nodes.
#
#   U        the underlay: bridge ul0, nothing else
#   A        the API server: tests/kube_api_double.py (a double: no package here ships a
#            Kubernetes API server) on 203.0.113.200:6443, serving node-1..node-3
#   N1..N3   nodes: eth0 203.0.113.K/24 and 2001:db8:1::K/64 on ul0; pod CIDR 10.244.K.0/24
#            (and fd00:10:244:K::/64 on a dual-stack cluster) out of the cluster CIDR
#            10.244.0.0/16 (fd00:10:244::/56); default routes via O. Each runs the DaemonSet's
#            init container (`cni-bridge install`) and its agent (`cni-bridge node-agent`), acted
#            out from the manifest by bats/nodes/daemonset.py; the plugins run here.
#   O        outside: eth0 203.0.113.100/24, 2001:db8:1::100/64 on ul0 and no route beyond it,
#            so no packet leaves the test's namespaces; masqueraded pod traffic ends here.
#   pods     namespaces attached by the conflist runner with each node's network.
#
# The agent writes each node's conflist into the node's conf dir; pods are attached with a copy
# whose host-local data dir is under the test's tmp dir (node 3's with the iptables backend,
# nodes 1 and 2 nftables). The plugins that run are the ones the init container installed, or
# PLUGIN_DIR when that holds the reference plugins.

UNDERLAY=203.0.113 UNDERLAY6=2001:db8:1
OUT_IP=$UNDERLAY.100 OUT_IP6=$UNDERLAY6::100
API_IP=$UNDERLAY.200 API_PORT=6443 API_TOKEN=cni-bridge-bats-token
CLUSTER_CIDR=10.244.0.0/16 CLUSTER_CIDR6=fd00:10:244::/56
# the agent's mark on its routes, as the agent defines it
ROUTE_PROTOCOL=$(sed -n 's/^ROUTE_PROTOCOL = \([0-9]*\)$/\1/p' "$REPO_ROOT/cni_bridge/node_agent/route_plan.py")
NODE_COUNT=3
DEPLOY="$REPO_ROOT/conf/deploy/kubernetes"
MANIFEST="$DEPLOY/cni-bridge.yaml"
IMAGE_DIR="$REPO_ROOT/dist/cni"  # the image's /opt/cni-bridge
CNI_BRIDGE_EXE="$IMAGE_DIR/cni-bridge"
API_DOUBLE="$REPO_ROOT/tests/kube_api_double.py"
ACTOR="$REPO_ROOT/bats/nodes/daemonset.py"

pod_cidr() { echo "10.244.$1.0/24"; }
pod_cidr6() { echo "fd00:10:244:$1::/64"; }
node_ip() { echo "$UNDERLAY.$1"; }
node_ip6() { echo "$UNDERLAY6::$1"; }
node_dir() { echo "$BATS_TEST_TMPDIR/node$1"; }
node_conflist() { echo "$(node_dir "$1")/net.d/10-cni-bridge.conflist"; }

# cluster_setup: the underlay, O, A and the nodes, with no route between nodes and nothing
# running yet.
cluster_setup() {
    require_root
    [[ -x $CNI_BRIDGE_EXE ]] || fail "no frozen build at $CNI_BRIDGE_EXE (build/build.sh)"
    [[ -n $ROUTE_PROTOCOL ]] || fail "no ROUTE_PROTOCOL in cni_bridge/node_agent/route_plan.py"
    "$PYTHON3" -c 'import yaml' 2>/dev/null \
        || fail "python3-yaml not installed (apt-get install python3-yaml)"
    U=$(netns_create U) || fail "cannot create U"
    O=$(netns_create O) || fail "cannot create O"
    A=$(netns_create A) || fail "cannot create A"
    ip -n "$U" link add ul0 type bridge && ip -n "$U" link set ul0 up || fail "no underlay"
    underlay_attach "$O" o "$OUT_IP" "$OUT_IP6"
    underlay_attach "$A" api "$API_IP"
    declare -ga NODES=("")
    local k
    for ((k = 1; k <= NODE_COUNT; k++)); do
        NODES[k]=$(netns_create "N$k") || fail "cannot create node $k"
        # no duplicate address detection on the nodes' links (their own and the bridge's,
        # link-local included): the dual-stack test waits less for usable addresses
        ip netns exec "${NODES[k]}" sysctl -qw net.ipv6.conf.default.accept_dad=0 \
            net.ipv6.conf.all.accept_dad=0
        underlay_attach "${NODES[k]}" "n$k" "$(node_ip "$k")" "$(node_ip6 "$k")"
        ip -n "${NODES[k]}" route add default via "$OUT_IP"
        ip -n "${NODES[k]}" -6 route add default via "$OUT_IP6"
        mkdir -p "$(node_dir "$k")/cache"
    done
    export CNI_BRIDGE_STATE_DIR="$BATS_TEST_TMPDIR/state"
    BIN_DIR="$BATS_FILE_TMPDIR/bin"  # one bundle for the file: later installs reuse it
    API_CTL="$BATS_TEST_TMPDIR/api.sock"
    declare -gA SERVER_PIDS=()
    declare -ga AGENT_PIDS=()
    API_PID=
}

cluster_teardown() {
    local pid k
    for pid in "${SERVER_PIDS[@]}" "${AGENT_PIDS[@]}" $API_PID; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -z ${BATS_TEST_COMPLETED:-} && -z ${BATS_TEST_SKIPPED:-} ]]; then
        for ((k = 1; k < ${#NODES[@]}; k++)); do
            dump_state "${NODES[k]}"
            echo "## agent log, node $k" >&2
            cat "$(node_dir "$k")/agent.log" >&2 2>/dev/null
        done
    fi
    for pid in "${AGENT_PIDS[@]}" $API_PID; do  # gone before their namespaces are
        wait_until 5 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null
    done
    netns_remove_prefix "$(test_prefix)"
}

# underlay_attach NS NAME ADDRESS [ADDRESS6]: NS's eth0 on the underlay bridge as port NAME.
underlay_attach() {
    local ns=$1 port=$2 address=$3 address6=${4:-}
    ip -n "$U" link add "$port" type veth peer name eth0 netns "$ns" || fail "cannot attach $ns"
    ip -n "$U" link set "$port" master ul0 up
    ip -n "$ns" addr add "$address/24" dev eth0
    [[ -z $address6 ]] || ip -n "$ns" addr add "$address6/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
}

# ---------------------------------------------------------------------------------------------
# the API double (tests/kube_api_double.py: its control interface is documented at its top)

# node_json K [dual] [INTERNAL_IP]: node-K in the double's short form.
node_json() {
    local k=$1 dual=${2:-} ip=${3:-$(node_ip "$1")} cidrs ips
    cidrs="\"$(pod_cidr "$k")\"" ips="\"$ip\""
    [[ -n $dual ]] && cidrs+=",\"$(pod_cidr6 "$k")\"" ips+=",\"$(node_ip6 "$k")\""
    echo "{\"name\":\"node-$k\",\"podCIDRs\":[$cidrs],\"internalIPs\":[$ips]}"
}

# api METHOD PATH [JSON]: one request to the double's control socket; prints the answer.
api() {
    "$PYTHON3" "$API_DOUBLE" ctl --control "$API_CTL" "$@"
}

api_start() {
    local nodes="$BATS_TEST_TMPDIR/nodes.json" k sep=
    {
        echo "["
        for ((k = 1; k <= NODE_COUNT; k++)); do echo "$sep$(node_json "$k" "$@")"; sep=,; done
        echo "]"
    } >"$nodes"
    ip netns exec "$A" "$PYTHON3" "$API_DOUBLE" --listen "$API_IP:$API_PORT" \
        --control "$API_CTL" --token "$API_TOKEN" --nodes "$nodes" \
        >"$BATS_TEST_TMPDIR/api.log" 2>&1 3>&- </dev/null &
    API_PID=$!
    wait_until 5 test -S "$API_CTL" || fail "the API double did not start: $(cat "$BATS_TEST_TMPDIR/api.log")"
    KUBECONFIG_FILE="$BATS_TEST_TMPDIR/kubeconfig"
    cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bats
  cluster:
    server: http://$API_IP:$API_PORT
contexts:
- name: bats
  context:
    cluster: bats
    user: cni-bridge-node
current-context: bats
users:
- name: cni-bridge-node
  user:
    token: $API_TOKEN
EOF
}

# ---------------------------------------------------------------------------------------------
# the DaemonSet's containers, acted out on a node

# pod_view K: daemonset.py's mapping of the pod's paths onto node K's (test) paths.
pod_view() {
    echo --node "node-$1" --image "$IMAGE_DIR" --root "$(node_dir "$1")/pod" \
        --host "/opt/cni/bin=$BIN_DIR" --host "/etc/cni/net.d=$(node_dir "$1")/net.d"
}

# node_init K: the init container on node K ($output/$status as bats' run).
node_init() {
    guard_not_init_netns "${NODES[$1]}"
    # shellcheck disable=SC2046  # pod_view is a word list
    run --separate-stderr ip netns exec "${NODES[$1]}" "$PYTHON3" "$ACTOR" run "$MANIFEST" \
        install $(pod_view "$1")
    echo "# init container on node $1: status $status: $output $stderr" >&2
}

# agent_start K [daemonset.py args...]: node K's agent in the background (AGENT_PIDS[K]).
agent_start() {
    local k=$1
    shift
    guard_not_init_netns "${NODES[k]}"
    # shellcheck disable=SC2046
    ip netns exec "${NODES[k]}" "$PYTHON3" "$ACTOR" run "$MANIFEST" agent $(pod_view "$k") \
        --env "KUBECONFIG=$KUBECONFIG_FILE" "$@" \
        >>"$(node_dir "$k")/agent.log" 2>&1 3>&- </dev/null &
    AGENT_PIDS[$k]=$!
}

# node_ready K [SECONDS]: the agent container's readiness probe, as the kubelet runs it,
# until it succeeds (for up to SECONDS, default 10).
node_ready() {
    # shellcheck disable=SC2046
    ip netns exec "${NODES[$1]}" "$PYTHON3" "$ACTOR" probe "$MANIFEST" agent $(pod_view "$1") \
        --wait "${2:-10}"
}

# cluster_start [dual]: the API double serving node-1..3 (dual: both families), the init
# container, and on every node the agent; returns when every node's pod is ready.
cluster_start() {
    local dual=${1:-} k
    local -a extra=()
    [[ -n $dual ]] && extra=(--drop-arg=--cluster-cidr
        "--arg=--cluster-cidr=$CLUSTER_CIDR" "--arg=--cluster-cidr=$CLUSTER_CIDR6")
    api_start $dual
    node_init 1  # the nodes share one bin dir here: one install serves them all
    assert_success
    for ((k = 1; k <= NODE_COUNT; k++)); do agent_start "$k" "${extra[@]}"; done
    for ((k = 1; k <= NODE_COUNT; k++)); do
        node_ready "$k" || fail "node $k not ready: $(cat "$(node_dir "$k")/agent.log")"
    done
}

# our_routes K [-6]: node K's routes with the agent's mark, "PREFIX via ADDRESS", sorted.
our_routes() {
    ip -n "${NODES[$1]}" ${2:-} -j route show proto "$ROUTE_PROTOCOL" \
        | jq -r '.[] | "\(.dst) via \(.gateway)"' | sort
}

# wait_routes K EXPECTED [-6]: node K's agent routes become EXPECTED (lines). The bound
# (ROUTE_WAIT, 5 s) only keeps a loaded machine from failing the test: the agent's target (1 s
# after an event) is measured by its benchmark, tests/perf/node_agent.py.
ROUTE_WAIT=5
wait_routes() {
    local deadline=$((${EPOCHREALTIME/./} + ROUTE_WAIT * 1000000))
    until routes_are "$@"; do
        if ((${EPOCHREALTIME/./} > deadline)); then
            assert_equal "$(our_routes "$1" "${3:-}")" "$2"
        fi
        sleep 0.02
    done
}
routes_are() { [[ $(our_routes "$1" "${3:-}") == "$2" ]]; }

# since T0: milliseconds from T0 (an $EPOCHREALTIME) to now
since() { echo $(((${EPOCHREALTIME/./} - ${1/./}) / 1000)); }

# ---------------------------------------------------------------------------------------------
# pods

plugins_of_nodes() { if is_reference; then echo "$PLUGIN_DIR"; else echo "$BIN_DIR"; fi; }

# pod_conflist K: the agent's conflist with the test's data dir (node 3: iptables backend).
pod_conflist() {
    local k=$1 filter='.plugins[0].ipam.dataDir = $dd' out
    out="$(node_dir "$k")/pods.conflist"
    ((k == 3)) && filter+=' | .plugins[0].ipMasqBackend = "iptables" | .plugins[1].backend = "iptables"'
    jq --arg dd "$(node_dir "$k")/ipam" "$filter" "$(node_conflist "$k")" >"$out" \
        || fail "no conflist on node $k"
    echo "$out"
}

# pod VERB K NAME [CAP_JSON]: run node K's network list for pod NAME through the conflist
# runner (ADD creates the pod's namespace first; its name is in POD[NAME]). The capability args
# given to ADD are passed again to DEL, as runtimes do.
pod() {
    local verb=$1 k=$2 name=$3 cap=${4:-${POD_CAP[$3]:-"{}"}}
    if [[ $verb == add && -z ${POD[$name]:-} ]]; then
        POD[$name]=$(netns_create "$name") || fail "cannot create pod $name"
    fi
    [[ $verb == add ]] && POD_CAP[$name]=$cap
    guard_not_init_netns "${NODES[k]}"
    run --separate-stderr timeout -k 5 90 "$PYTHON3" "$RUNNER" "$verb" \
        --conflist "$(pod_conflist "$k")" --cache "$(node_dir "$k")/cache" \
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
