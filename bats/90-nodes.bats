#!/usr/bin/env bats
# A Kubernetes cluster as conf/deploy/kubernetes/cni-bridge.yaml deploys it: three nodes on one
# underlay, each running the DaemonSet's init container and agent (acted out from the manifest)
# against an API double (bats/nodes/world.bash). The test adds no route between nodes: the
# agents do, from the Node objects.

load helpers
load nodes/world

setup() { cluster_setup; }
teardown() { cluster_teardown; }

# the agent routes node K should have: every other node's pod CIDR via its address
routes_of() {
    local k=$1 fam=${2:-4} j
    for ((j = 1; j <= NODE_COUNT; j++)); do
        ((j == k)) && continue
        if [[ $fam == 4 ]]; then echo "$(pod_cidr "$j") via $(node_ip "$j")"
        else echo "$(pod_cidr6 "$j") via $(node_ip6 "$j")"; fi
    done | sort
}

@test "nodes: the manifest grants get/list/watch on nodes only, runs the agent with options it has, probes its ready file; its init container installs the bundle" {
    run "$PYTHON3" "$ACTOR" check "$MANIFEST" "$DEPLOY/cni-bridge-serve.patch.yaml" \
        "$DEPLOY/cni-bridge-serve.yaml" "$DEPLOY/cni-bridge-image.Containerfile" "$CNI_BRIDGE_EXE"
    assert_success
    assert_output ''
    # the same check on a manifest that breaks each promise once
    "$PYTHON3" - "$MANIFEST" >"$BATS_TEST_TMPDIR/broken.yaml" <<'EOF'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
role = next(d for d in docs if d["kind"] == "ClusterRole")
role["rules"][0]["verbs"].append("patch")
pod = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
pod["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
agent = pod["containers"][0]
agent["args"].append("--bogus-flag=1")
agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name"
agent["securityContext"]["capabilities"]["add"] = []
agent["readinessProbe"]["exec"]["command"][-1] = "/tmp/elsewhere"
agent["image"] = "cni-bridge:0.0.9"
yaml.safe_dump_all(docs, sys.stdout)
EOF
    run "$PYTHON3" "$ACTOR" check "$BATS_TEST_TMPDIR/broken.yaml" \
        "$DEPLOY/cni-bridge-serve.patch.yaml" "$DEPLOY/cni-bridge-serve.yaml" \
        "$DEPLOY/cni-bridge-image.Containerfile" "$CNI_BRIDGE_EXE"
    assert_failure 1
    assert_line --partial "ClusterRole grants more or less than get/list/watch nodes"
    assert_line --partial "not every taint is tolerated"
    assert_line "node-agent has no option --bogus-flag"
    assert_line "NODE_NAME does not come from the downward API's spec.nodeName"
    assert_line "the agent lacks NET_ADMIN (routes)"
    assert_line --partial "does not test --ready-file /run/cni-bridge-agent/ready"
    assert_line "agent's image cni-bridge:0.0.9 is not version $("$CNI_BRIDGE_EXE" version | sed -n '1s/.* //p')"
    assert_line "the serve patch uses another image than the agent"
    assert_equal "${#lines[@]}" 8

    node_init 1
    assert_success
    assert_line --regexp "^bundle      $BIN_DIR/\.cni-bridge-.* \((copied|already there, reused)\)$"
    assert_line --regexp '^linked      bridge, host-local, portmap, .*cni-bridge -> '
    local p linked
    linked=$(sed -n 's/^linked *\(.*\) -> .*/\1/p' <<<"$output")
    for p in ${linked//,/ }; do
        [[ $(readlink "$BIN_DIR/$p") == .cni-bridge-*/cni-bridge ]] || fail "$p not installed"
    done
    node_init 2  # the same bundle on another node, or the pod restarted: left as it is
    assert_success
    assert_line --regexp '^bundle .*\(already there, reused\)$'
}

@test "nodes: with the agents' routes, pods on different nodes reach each other by pod address, the outside sees the node's address, DEL leaves nothing (nftables and iptables nodes)" {
    cluster_start
    local k conf ip1 ip2 ip3
    for k in 1 2 3; do
        wait_routes "$k" "$(routes_of "$k")"
        conf=$(cat "$(node_conflist "$k")")
        assert_json .cniVersion 1.0.0 "$conf"
        assert_json '.plugins[0].ipam.ranges | tostring' "[[{\"subnet\":\"$(pod_cidr "$k")\"}]]" "$conf"
        assert_json '.plugins[0].nonMasqueradeCIDRs | tostring' "[\"$CLUSTER_CIDR\"]" "$conf"
    done
    for k in 1 2 3; do pod add "$k" "p$k"; done
    for k in 1 2 3; do pod check "$k" "p$k"; done         # the exclusion rules are checked too
    ip1=$(pod_ip "${POD[p1]}") ip2=$(pod_ip "${POD[p2]}") ip3=$(pod_ip "${POD[p3]}")
    [[ $ip1 == 10.244.1.* && $ip2 == 10.244.2.* && $ip3 == 10.244.3.* ]] \
        || fail "pod addresses outside their nodes' pod CIDRs: $ip1 $ip2 $ip3"

    # the reference bridge has no nonMasqueradeCIDRs: it masquerades pod-to-pod traffic
    # leaving the node, so the receiver sees the sending node's address
    serve p2 "${POD[p2]}" tcp 7001
    assert_reach "${POD[p1]}" tcp "$ip2" 7001 p2          # node 1 (nftables) -> node 2
    if is_reference; then assert_equal "$(server_peer p2)" "$(node_ip 1)"
    else assert_equal "$(server_peer p2)" "$ip1"; fi
    serve p1 "${POD[p1]}" tcp 7003
    assert_reach "${POD[p3]}" tcp "$ip1" 7003 p1          # node 3 (iptables) -> node 1
    if is_reference; then assert_equal "$(server_peer p1)" "$(node_ip 3)"
    else assert_equal "$(server_peer p1)" "$ip3"; fi

    for k in 1 3; do                                        # leaving the cluster: masqueraded
        serve "out$k" "$O" tcp "710$k"
        assert_reach "${POD[p$k]}" tcp "$OUT_IP" "710$k" "out$k"
        assert_equal "$(server_peer "out$k")" "$(node_ip "$k")"
    done

    for k in 1 2 3; do pod del "$k" "p$k"; done
    for k in 1 2 3; do
        run node_leftovers "$k"
        assert_output ''
    done
    run records
    assert_output ''
}

@test "nodes: a hostPort published on node 2 answers from node 1 and from a pod on node 1" {
    cluster_start
    pod add 1 p1
    pod add 2 web '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
    serve from-node "${POD[web]}" tcp 80
    assert_reach "${NODES[1]}" tcp "$(node_ip 2)" 8080 from-node
    assert_equal "$(server_peer from-node)" "$(node_ip 1)"   # an outside client keeps its address
    serve from-pod "${POD[web]}" tcp 80
    assert_reach "${POD[p1]}" tcp "$(node_ip 2)" 8080 from-pod
    assert_equal "$(server_peer from-pod)" "$(node_ip 1)"    # leaving node 1: masqueraded
    pod del 2 web
    pod del 1 p1
    run node_leftovers 2
    assert_output ''
    ip netns exec "${NODES[2]}" nft list ruleset | grep -q 'dport 8080\|8080 :' \
        && fail "port 8080 still published on node 2"
    true
}

@test "nodes: dual stack: each node's network has both pod CIDRs, routes in both families, pods reach each other by their IPv6 pod addresses" {
    cluster_start dual
    local k conf
    for k in 1 2 3; do
        wait_routes "$k" "$(routes_of "$k" 6)" -6
        wait_routes "$k" "$(routes_of "$k")"
        conf=$(cat "$(node_conflist "$k")")
        assert_json '.plugins[0].ipam.ranges | tostring' \
            "[[{\"subnet\":\"$(pod_cidr "$k")\"}],[{\"subnet\":\"$(pod_cidr6 "$k")\"}]]" "$conf"
    done
    pod add 1 p1
    pod add 2 p2
    local ip1 ip2
    ip1=$(pod_ip "${POD[p1]}" 6) ip2=$(pod_ip "${POD[p2]}" 6)
    [[ $ip1 == fd00:10:244:1:* && $ip2 == fd00:10:244:2:* ]] || fail "IPv6 pod addresses: $ip1 $ip2"
    local ns
    for ns in "${NODES[1]}" "${NODES[2]}" "${POD[p1]}" "${POD[p2]}"; do
        # as settle_v6, with more time: link-local addresses leave their tentative state in a
        # kernel work queue every namespace on the machine shares (seconds when it is busy)
        wait_until 30 no_tentative "$ns" || fail "$ns: IPv6 addresses still tentative after 30 s"
    done
    serve p2 "${POD[p2]}" tcp 7006
    assert_reach "${POD[p1]}" tcp "$ip2" 7006 p2
    if is_reference; then assert_equal "$(server_peer p2)" "$(node_ip6 1)"
    else assert_equal "$(server_peer p2)" "$ip1"; fi
    serve p2v4 "${POD[p2]}" tcp 7004
    assert_reach "${POD[p1]}" tcp "$(pod_ip "${POD[p2]}")" 7004 p2v4
    pod del 2 p2
    pod del 1 p1
}

@test "nodes: a node added later is routed everywhere, a changed InternalIP moves its route, a removed node loses it; a node behind a gateway is not routed" {
    cluster_start
    local k t0 added moved removed
    t0=$EPOCHREALTIME
    api POST /nodes "$(node_json 4)"
    for k in 1 2 3; do
        wait_routes "$k" "$(routes_of "$k"; echo "$(pod_cidr 4) via $(node_ip 4)")"
    done
    added=$(since "$t0") t0=$EPOCHREALTIME
    api POST /nodes "$(node_json 4 '' "$UNDERLAY.14")"
    for k in 1 2 3; do
        wait_routes "$k" "$(routes_of "$k"; echo "$(pod_cidr 4) via $UNDERLAY.14")"
    done
    moved=$(since "$t0") t0=$EPOCHREALTIME
    api DELETE /nodes/node-4
    for k in 1 2 3; do wait_routes "$k" "$(routes_of "$k")"; done
    removed=$(since "$t0")
    echo "# every node's routes followed: node added ${added} ms, address changed ${moved} ms, node removed ${removed} ms (from the API request)" >&3

    # node-5's address is not on the underlay: reaching it takes a gateway, which is the
    # network's business, and the agent says so
    api POST /nodes "$(node_json 5 '' 192.0.2.5)"
    for k in 1 2 3; do
        wait_until 5 grep -q 'node-5' "$(node_dir "$k")/agent.log" \
            || fail "node $k's agent said nothing of node-5: $(cat "$(node_dir "$k")/agent.log")"
        assert_equal "$(our_routes "$k")" "$(routes_of "$k")"
        run grep 'node-5' "$(node_dir "$k")/agent.log"
        assert_output --partial "192.0.2.5 is not on a directly connected network"
    done
}

@test "nodes: the API server stopped: nothing is removed meanwhile; restarted: the watch resumes where it was" {
    cluster_start
    local k state before
    before=$(for k in 1 2 3; do our_routes "$k"; cat "$(node_conflist "$k")"; done)
    state=$(api GET /state)
    api POST /stop
    api POST /nodes "$(node_json 4)"  # an event the agents cannot see yet
    for k in 1 2 3; do                 # each agent finds its watch broken and the API gone
        wait_until 5 grep -q 'retrying with backoff' "$(node_dir "$k")/agent.log" \
            || fail "node $k's agent did not notice: $(cat "$(node_dir "$k")/agent.log")"
    done
    assert_equal "$(for k in 1 2 3; do our_routes "$k"; cat "$(node_conflist "$k")"; done)" "$before"
    for k in 1 2 3; do kill -0 "${AGENT_PIDS[k]}" || fail "node $k's agent exited"; done
    api POST /start
    for k in 1 2 3; do
        wait_until 10 routes_are "$k" "$(routes_of "$k"; echo "$(pod_cidr 4) via $(node_ip 4)")" \
            || fail "node $k: no route to node-4 after the API came back: $(our_routes "$k")"
    done
    # resumed from the last resourceVersion: no agent listed the nodes again
    assert_equal "$(api GET /state | jq .lists)" "$(jq .lists <<<"$state")"
}

@test "nodes: an agent route deleted by hand comes back; a route it did not make stays untouched" {
    cluster_start
    local n1=${NODES[1]}
    wait_routes 1 "$(routes_of 1)"
    ip -n "$n1" route add 10.244.99.0/24 via "$OUT_IP" proto static   # someone else's route
    ip -n "$n1" route del "$(pod_cidr 2)"
    wait_routes 1 "$(routes_of 1)"
    # node-3's pod CIDR routed by someone else: the agent leaves that route as it is
    ip -n "$n1" route replace "$(pod_cidr 3)" via "$OUT_IP" proto static
    ip -n "$n1" route del "$(pod_cidr 2)"                               # another repair to do
    wait_routes 1 "$(pod_cidr 2) via $(node_ip 2)"
    api POST /nodes "$(node_json 4)"
    wait_routes 1 "$(pod_cidr 2) via $(node_ip 2)
$(pod_cidr 4) via $(node_ip 4)"
    run ip -n "$n1" route show proto static
    assert_output "10.244.3.0/24 via $OUT_IP dev eth0 
10.244.99.0/24 via $OUT_IP dev eth0 "
    run grep -F "a route to $(pod_cidr 3) that is not ours" "$(node_dir 1)/agent.log"
    assert_success  # and says so
}

@test "nodes: a node re-registered with a new pod CIDR: its network is replaced, ADD names the bridge's old gateway and the remedy and leaves nothing; after the remedy it works" {
    cluster_start
    pod add 3 old
    pod del 3 old                        # the bridge keeps its gateway 10.244.3.1/24
    api POST /nodes '{"name":"node-3","podCIDRs":["10.244.33.0/24"],"internalIPs":["'"$(node_ip 3)"'"]}'
    wait_until 2 grep -q 10.244.33.0/24 "$(node_conflist 3)" \
        || fail "node 3's network not replaced: $(cat "$(node_conflist 3)")"
    POD[new]=$(netns_create new)
    local before
    before=$(node_leftovers 3; ls -A "$(node_dir 3)/ipam/cni-bridge")
    run --separate-stderr timeout -k 5 90 "$PYTHON3" "$RUNNER" add --conflist "$(pod_conflist 3)" \
        --cache "$(node_dir 3)/cache" --plugin-dir "$(plugins_of_nodes)" --host-ns "${NODES[3]}" \
        --id new --netns "$(netns_path "${POD[new]}")"
    echo "# ADD: $status $output" >&2
    assert_failure
    assert_json .plugin bridge
    if is_reference; then  # names neither the address it found nor what to do
        assert_json .code 999
        assert_json .msg 'failed to set bridge addr: "br0" already has an IP address different from 10.244.33.1/24'
    else
        assert_json .code 7
        assert_json .msg '"br0" already has address 10.244.3.1/24, expected 10.244.33.1/24'
        assert_json .details 'set "forceAddress": true to replace it, or remove it: ip addr del 10.244.3.1/24 dev br0'
    fi
    assert_equal "$(node_leftovers 3; ls -A "$(node_dir 3)/ipam/cni-bridge")" "$before"
    run ip -n "${POD[new]}" -o link show
    assert_output --regexp '^1: lo:'
    assert_equal "${#lines[@]}" 1

    ip -n "${NODES[3]}" addr del 10.244.3.1/24 dev br0  # the remedy the message gives
    pod add 3 new
    [[ $(pod_ip "${POD[new]}") == 10.244.33.* ]] || fail "not in the new pod CIDR: $(pod_ip "${POD[new]}")"
    pod del 3 new
}
