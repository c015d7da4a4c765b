#!/usr/bin/env bats
# A Kubernetes-style node layout: three nodes on one underlay, each with its own pod CIDR out
# of the cluster CIDR and host routes to the others' (bats/nodes/world.bash), the node networks
# written by `cni-bridge install --subnet` and by the DaemonSet of
# conf/deploy/kubernetes/cni-bridge-install.yaml.

load helpers
load nodes/world

setup() { cluster_setup; }
teardown() { cluster_teardown; }

@test "nodes: the DaemonSet's install step writes each node's network from its pod CIDR; a node without one gets nothing" {
    command -v "$PYTHON3" >/dev/null && "$PYTHON3" -c 'import yaml' 2>/dev/null \
        || skip "python3-yaml not installed (apt-get install python3-yaml)"
    local k conf
    for k in 1 2 4; do
        local node=${NODES[k]:-${NODES[1]}}  # node-4 is not in the ConfigMap
        run --separate-stderr ip netns exec "$node" "$PYTHON3" "$REPO_ROOT/bats/nodes/daemonset.py" \
            "$MANIFEST" "node-$k" "$(node_dir "$k")/pod-cidrs" "CNI_BRIDGE=$CNI_BRIDGE_EXE" \
            "CNI_BIN_DIR=$BIN_DIR" "CNI_CONF_DIR=$(node_dir "$k")/net.d"
        echo "# daemonset on node-$k: status $status: $output $stderr" >&2
        if ((k == 4)); then
            assert_failure 1
            assert_equal "$stderr" "no pod CIDR for node node-4: add it to ConfigMap cni-bridge-pod-cidrs (key node-4) or set POD_CIDR; nothing was installed"
            [[ ! -e $(node_dir 4)/net.d ]] || fail "node-4 got a network directory"
            continue
        fi
        assert_success
        assert_line "network     $(node_conflist "$k") (written; pod CIDR $(pod_cidr "$k"))"
        conf=$(cat "$(node_conflist "$k")")
        assert_json .cniVersion 1.0.0 "$conf"
        assert_json '.plugins[0].ipam.ranges | tostring' "[[{\"subnet\":\"$(pod_cidr "$k")\"}]]" "$conf"
        assert_json '.plugins[0].nonMasqueradeCIDRs | tostring' '["10.244.0.0/16"]' "$conf"
        [[ $(readlink "$BIN_DIR/bridge") == .cni-bridge-*/cni-bridge ]] || fail "bridge not installed"
    done
    # run again (a restart of the DaemonSet's pod): nothing changes
    run --separate-stderr ip netns exec "${NODES[1]}" "$PYTHON3" "$REPO_ROOT/bats/nodes/daemonset.py" \
        "$MANIFEST" node-1 "$(node_dir 1)/pod-cidrs" "CNI_BRIDGE=$CNI_BRIDGE_EXE" \
        "CNI_BIN_DIR=$BIN_DIR" "CNI_CONF_DIR=$(node_dir 1)/net.d"
    assert_success
    assert_line --partial "(already there, reused)"
    assert_line "network     $(node_conflist 1) (unchanged; pod CIDR $(pod_cidr 1))"
}

@test "nodes: pods on different nodes reach each other by pod address (no NAT), the outside masqueraded, DEL leaves nothing (nftables and iptables nodes)" {
    skip_reference "no nonMasqueradeCIDRs: the reference masquerades pod-to-pod traffic leaving the node, so the receiver sees the sending node's address"
    cluster_networks
    local k ip1 ip2 ip3
    for k in 1 2 3; do pod add "$k" "p$k"; done
    for k in 1 2 3; do pod check "$k" "p$k"; done         # the exclusion rules are checked too
    ip1=$(pod_ip "${POD[p1]}") ip2=$(pod_ip "${POD[p2]}") ip3=$(pod_ip "${POD[p3]}")
    [[ $ip1 == 10.244.1.* && $ip2 == 10.244.2.* && $ip3 == 10.244.3.* ]] \
        || fail "pod addresses outside their nodes' pod CIDRs: $ip1 $ip2 $ip3"

    serve p2 "${POD[p2]}" tcp 7001
    assert_reach "${POD[p1]}" tcp "$ip2" 7001 p2          # node 1 (nftables) -> node 2
    assert_equal "$(server_peer p2)" "$ip1"
    serve p1 "${POD[p1]}" tcp 7003
    assert_reach "${POD[p3]}" tcp "$ip1" 7003 p1          # node 3 (iptables) -> node 1
    assert_equal "$(server_peer p1)" "$ip3"

    local out
    for k in 1 3; do                                        # leaving the cluster: masqueraded
        serve "out$k" "$O" tcp "710$k"
        assert_reach "${POD[p$k]}" tcp "$OUT_IP" "710$k" "out$k"
        assert_equal "$(server_peer "out$k")" "$(node_ip "$k")"
    done
    run ip netns exec "${NODES[3]}" iptables-save -t nat
    assert_output --regexp "-A CNI-[0-9a-f]{24} -d 10\.244\.0\.0/16 .*-j ACCEPT"

    for k in 1 2 3; do pod del "$k" "p$k"; done
    for k in 1 2 3; do
        run node_leftovers "$k"
        assert_output ''
    done
    run records
    assert_output ''
}

@test "nodes: without nonMasqueradeCIDRs a pod reaching another node is masqueraded to its node's address" {
    local k
    for k in 1 2; do
        node_network "$k" --subnet "$(pod_cidr "$k")"
        pod add "$k" "p$k"
    done
    serve p2 "${POD[p2]}" tcp 7002
    assert_reach "${POD[p1]}" tcp "$(pod_ip "${POD[p2]}")" 7002 p2
    assert_equal "$(server_peer p2)" "$(node_ip 1)"
    for k in 1 2; do pod del "$k" "p$k"; done
}

@test "nodes: a hostPort published on node 2 answers from node 1 and from a pod on node 1" {
    cluster_networks
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

@test "nodes: a node given a new pod CIDR: ADD names the bridge's old gateway and the remedy and leaves nothing; after the remedy it works" {
    cluster_networks
    pod add 3 old
    pod del 3 old                        # the bridge keeps its gateway 10.244.3.1/24
    node_network 3 --subnet 10.244.33.0/24 --cluster-cidr "$CLUSTER_CIDR"
    assert_line "network     $(node_conflist 3) (replaced; pod CIDR 10.244.33.0/24)"
    POD[new]=$(netns_create new)
    local before
    before=$(node_leftovers 3; ls -A "$(node_dir 3)/ipam/cni-bridge")
    run --separate-stderr timeout -k 5 90 "$PYTHON3" "$RUNNER" add --conflist "$(node_conflist 3)" \
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
