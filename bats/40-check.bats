#!/usr/bin/env bats
# D. CHECK: passes after ADD (prevResult from the runtime's cache), fails with an error object
# for each kind of drift, tolerates what later plugins change, needs prevResult, reaches IPAM.
# The runtime is the real libcni client unless a test says otherwise.

load helpers

PM='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'

setup() {
    RUNTIME=libcni
    world_setup
}
teardown() { world_teardown; }

# The reference portmap (1.1.1) CHECK fails whenever a v4 mapping exists: it looks for the v4
# rules in ip6tables too (REFERENCE.md 4.5). Against it, pods get no mapping unless the test is
# about mappings (and then it is skipped).
pm_unless_reference() { is_reference && echo '{}' || echo "$PM"; }
REF_PORTMAP_CHECK="1.1.1 portmap CHECK fails with a v4 mapping (looks for v4 rules in ip6tables)"

# add_and_check: ADD C1 (dual stack, with one TCP mapping), CHECK passes.
add_and_check() {
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$(pm_unless_reference)"
    RESULT=$output
    cni 0 check "$C1"
    assert_output ''
}

# check_fails [REGEX]: CHECK now fails; libcni passes on the plugin's message (matching REGEX).
check_fails() {
    cni 1 check "$C1"
    assert_regex "$stderr" "libcni-client: .*${1:-}"
}

@test "CHECK passes after ADD, dual stack with a port mapping (bridge, host-local, portmap)" {
    skip_reference "$REF_PORTMAP_CHECK"
    add_and_check
    # and CHECK changes nothing: traffic still flows through the mapping
    serve pod "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 pod
}

@test "CHECK passes after ADD for a v4-only and a v6-only pod with port mappings" {
    skip_reference "$REF_PORTMAP_CHECK"
    local C2
    C2=$(netns_create C2)
    RUNTIME=runner
    conflist "$NET"
    conflist v6 "$V6ONLY | .plugins[0].bridge = \"cbr6\" |
        .plugins[0].ipam.ranges = [[{subnet: \"fd00:98::/64\"}]]"
    cni 0 add "$C1" cap="$PM"
    cni 0 add "$C2" net=v6 cap='{"portMappings":[{"hostPort":8081,"containerPort":80,"protocol":"tcp"}]}'
    cni 0 check "$C1"
    cni 0 check "$C2" net=v6
}

@test "CHECK fails when the container's address is removed" {
    add_and_check
    ip -n "$C1" addr del 10.99.0.2/24 dev eth0
    check_fails '10\.99\.0\.2'
}

@test "CHECK fails when the container's default route is removed" {
    add_and_check
    ip -n "$C1" -6 route del default
    check_fails
}

@test "CHECK fails when the container's interface is deleted" {
    add_and_check
    ip -n "$C1" link del eth0
    check_fails
}

@test "CHECK fails when the host veth leaves the bridge" {
    add_and_check
    ip -n "$H" link set "$(jq -r '.interfaces[1].name' <<<"$RESULT")" nomaster
    check_fails
}

@test "CHECK fails when the bridge is deleted" {
    add_and_check
    ip -n "$H" link del cbr0
    check_fails cbr0
}

@test "CHECK fails when the host-local reservation is removed" {
    add_and_check
    rm "$DATA_DIR/$NET/10.99.0.2" "$DATA_DIR/$NET/fd00:99::2"
    check_fails ctr-C1
}

@test "CHECK fails when the pod's masquerade rule is removed" {
    skip_reference "bridge CHECK does not look at masquerade rules"
    add_and_check
    fw_drop_masq 10.99.0.2
    check_fails '10\.99\.0\.2'
}

@test "CHECK fails when the port mapping's DNAT rule is removed" {
    skip_reference "$REF_PORTMAP_CHECK"
    add_and_check
    fw_drop_dnat 8080
    fw_mentions_port 8080 && fail "DNAT entry for 8080 still there: $(fw_dump)"
    check_fails '8080'
}

@test "CHECK tolerates what later plugins and the container change (tuning, extra routes and addresses)" {
    [[ -x $REFERENCE_DIR/tuning ]] || skip "no reference tuning plugin"
    local dir
    dir=$(plugin_dir_mixed)
    conflist "$NET" "$DS | .plugins += [{type: \"tuning\", mtu: 1400, dataDir: \"$BATS_TEST_TMPDIR/tuning\",
        sysctl: {\"net.ipv4.conf.eth0.arp_filter\": \"1\"}}]"
    cni 0 add "$C1" cap="$(pm_unless_reference)" path="$dir"
    assert_equal "$(link_json "$C1" eth0 | jq .mtu)" 1400
    # the container adds its own routes and addresses
    ip -n "$C1" route add 192.0.2.0/24 via "$POD_GW4"
    ip -n "$C1" addr add 10.99.0.200/32 dev eth0
    ip -n "$C1" -6 route add 2001:db8:1::/64 via "$POD_GW6"
    cni 0 check "$C1" path="$dir"
    skip_reference "bridge DEL fails once the container has an address of its own (masquerade torn down per address, chain already gone)"
    cni 0 del "$C1" path="$dir"
    assert_clean
}

@test "CHECK without prevResult is an error; CHECK is forwarded to the IPAM plugin" {
    local spy
    spy=$(spy_ipam)
    RUNTIME=runner
    conflist "$NET" "$NOPORTMAP | .plugins[0].ipam.type = \"spy\" |
        .plugins[0].ipam.spyLog = \"$BATS_TEST_TMPDIR/spy.log\""
    cni 0 add "$C1" path="$spy:$PLUGIN_DIR"
    cni 0 check "$C1" path="$spy:$PLUGIN_DIR"
    run cat "$BATS_TEST_TMPDIR/spy.log"
    assert_output "$(printf 'ADD\nCHECK')"

    local cfg
    cfg=$(jq -c --arg v "$PLUGIN_CNI_VERSION" '.plugins[0] + {name: .name, cniVersion: $v}' \
        "$NETCONF_DIR/$NET.conflist")
    run_plugin '!' bridge CHECK "$cfg" "CNI_PATH=$spy:$PLUGIN_DIR" CNI_CONTAINERID=ctr-C1 \
        "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
    assert_regex "$(jq -r .msg <<<"$output")" '[Pp]rev[Rr]esult'
    run_plugin '!' portmap CHECK "$(make_config portmap)" CNI_CONTAINERID=ctr-C1 \
        "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
    assert_regex "$(jq -r .msg <<<"$output")" '[Pp]rev[Rr]esult'
}
