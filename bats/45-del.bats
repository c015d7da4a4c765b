#!/usr/bin/env bats
# E. DEL and idempotence, through the conflist runner (the plugins' highest cniVersion).
# After the last DEL, H must be back at baseline (assert_clean): no host veth, no reservation,
# no record, no firewall rule naming a pod address or a published port. Documented leftovers,
# for both implementations: the bridge and its gateway address, shared chains/tables.

load helpers

PM='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":8053,"containerPort":53,"protocol":"udp"}]}'

setup() { world_setup; }
teardown() { world_teardown; }

assert_ports_gone() {
    local p
    for p in "$@"; do
        if fw_mentions_port "$p"; then fail "a firewall rule still publishes port $p: $(fw_dump)"; fi
    done
}

@test "DEL after ADD removes the interface, the veth, the reservations and every rule of the pod" {
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$PM"
    serve pod "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 pod
    run fw_addresses
    assert_output "$(printf '10.99.0.2\nfd00:99::2')"

    cni 0 del "$C1"
    assert_output ''
    run ip -n "$C1" -o link show
    assert_equal "$(awk -F': ' '{print $2}' <<<"$output")" lo
    assert_clean
    assert_ports_gone 8080 8053
    # documented leftover: the bridge with its gateway addresses
    run ip -n "$H" -j addr show dev cbr0 scope global
    assert_json '[.[0].addr_info[] | .local // empty] | sort | join(",")' "$POD_GW4,$POD_GW6"
    # and nothing answers on the port any more
    probe "$O" tcp "$H_IP4" 8080 1
    assert_failure
}

@test "DEL twice, and DEL of a container never added, succeed with no output" {
    conflist "$NET"
    cni 0 add "$C1" cap="$PM"
    cni 0 del "$C1"
    cni 0 del "$C1"
    assert_output ''
    assert_clean

    # straight to the plugins: exit 0 and empty stdout, with and without a netns
    local cfg
    cfg=$(jq -c --arg v "$PLUGIN_CNI_VERSION" '.plugins[0] + {name: .name, cniVersion: $v}' \
        "$NETCONF_DIR/$NET.conflist")
    run_plugin 0 bridge DEL "$cfg" CNI_CONTAINERID=never "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
    assert_output ''
    run_plugin 0 bridge DEL "$cfg" CNI_CONTAINERID=never CNI_NETNS= \
        "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
    assert_output ''
    cfg=$(make_config portmap ".runtimeConfig = $PM")
    run_plugin 0 portmap DEL "$cfg" CNI_CONTAINERID=never "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
    assert_output ''
    run_plugin 0 host-local DEL "$(make_config host-local)" CNI_CONTAINERID=never
    assert_output ''
    assert_clean
}

@test "DEL after the container's netns was deleted releases everything on the host side" {
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$PM"
    local nspath
    nspath=$(netns_path "$C1")
    ip netns del "$C1"
    cni 0 del "$nspath"
    run reservations
    assert_output ''
    assert_ports_gone 8080 8053
    skip_reference "DEL with a deleted netns leaks the masquerade rules (REFERENCE.md 2.5)"
    assert_clean
}

@test "DEL when CNI_NETNS is a plain file (the netns was replaced) succeeds and cleans up" {
    conflist "$NET"
    cni 0 add "$C1" cap="$PM"
    local nspath
    nspath=$(netns_path "$C1")
    ip netns del "$C1"
    touch "$nspath"
    skip_reference "DEL fails when CNI_NETNS is not a network namespace"
    cni 0 del "$nspath"
    rm -f "$nspath"
    assert_clean
    assert_ports_gone 8080 8053
}

@test "DEL without CNI_NETNS, and DEL without prevResult, release the addresses" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$PM"
    cni 0 add "$C2"
    # C1: the runtime no longer knows the netns (CNI_NETNS is empty)
    cni 0 del "" id=ctr-C1 cap="$PM"
    # C2: the runtime lost its cache, so no prevResult is sent
    rm "$CACHE_DIR/results/$NET-ctr-C2-eth0"
    cni 0 del "$C2"
    run reservations
    assert_output ''
    run ip -n "$C2" link show eth0
    assert_failure
    skip_reference "bridge DEL without CNI_NETNS skips the masquerade teardown (USERS.md 6)"
    run records
    assert_output ''
    run fw_addresses
    assert_output ''
    assert_ports_gone 8080 8053
}

@test "ADD, DEL, ADD again with the same container ID: fully working, no stale state" {
    conflist "$NET"
    cni 0 add "$C1" cap="$PM"
    cni 0 del "$C1"
    cni 0 add "$C1" cap="$PM"
    assert_json '.ips[0].address' 10.99.0.3/24
    is_reference || cni 0 check "$C1" # 1.1.1 portmap CHECK fails with any v4 mapping
    run fw_addresses
    assert_output 10.99.0.3
    run reservations
    assert_output '10.99.0.3 ctr-C1/eth0'
    serve pod "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 pod
    assert_equal "$(server_peer pod)" "$O_IP4"
    serve out "$O" tcp 9000
    assert_reach "$C1" tcp "$O_IP4" 9000 out
    assert_equal "$(server_peer out)" "$H_IP4"
    cni 0 del "$C1"
    assert_clean
}

@test "DEL of one container leaves the other's connectivity, masquerade and host ports intact" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1" cap="$PM"
    cni 0 add "$C2" cap='{"portMappings":[{"hostPort":8081,"containerPort":80,"protocol":"tcp"}]}'
    cni 0 del "$C1"
    assert_ports_gone 8080 8053
    run fw_addresses
    assert_output 10.99.0.3
    is_reference || cni 0 check "$C2" # 1.1.1 portmap CHECK fails with any v4 mapping
    serve pod "$C2" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8081 pod
    assert_equal "$(server_peer pod)" "$O_IP4"
    serve out "$O" tcp 9000
    assert_reach "$C2" tcp "$O_IP4" 9000 out
    assert_equal "$(server_peer out)" "$H_IP4"
    cni 0 del "$C2"
    assert_clean
    assert_ports_gone 8081
}
