#!/usr/bin/env bats
# The loopback plugin: PLUGIN_DIR's against the reference's (/usr/lib/cni/loopback) as the
# oracle, each in a container namespace of its own, with lo's state read by `ip -j`. Results
# are compared as JSON with an empty `dns` left out (libcni >= 1.2 omits it from a 1.x result;
# Debian 1.1.1's prints `"dns": {}`) and the sandbox path set aside.

load helpers

setup() {
    common_setup
    [[ -x $REFERENCE_DIR/loopback ]] || skip "no reference loopback in $REFERENCE_DIR"
    # a container namespace as a runtime makes it: lo down
    ip -n "$C1" link set lo down
    CREF="$(netns_create Cref)" || fail "cannot create namespace Cref"
    ip -n "$CREF" link set lo down
}
teardown() { common_teardown; }

lo_conf() { echo "{\"cniVersion\":\"$1\",\"name\":\"lonet\",\"type\":\"loopback\"}"; }

# lo_up NS: "up" or "down" as `ip -j link` shows lo's flags
lo_up() {
    ip -n "$1" -j link show lo | jq -r 'if (.[0].flags | index("UP")) then "up" else "down" end'
}

lo_addrs() { ip -n "$1" -j addr show lo | jq -c '[.[0].addr_info[] | "\(.local)/\(.prefixlen)"]'; }

# The result without an empty dns and without the sandbox path.
normalized() { jq -cS 'if .dns == {} then del(.dns) else . end | del(.interfaces[]?.sandbox)'; }

# both COMMAND VERSION [VAR=VALUE ...]: the same call through PLUGIN_DIR's loopback in C1 and
# the reference's in Cref; sets MINE/THEIRS (outputs) and MINE_STATUS/THEIRS_STATUS.
both() {
    local command=$1 version=$2
    shift 2
    run_plugin '?' loopback "$command" "$(lo_conf "$version")" "$@"
    MINE=$output MINE_STATUS=$status
    PLUGIN_DIR=$REFERENCE_DIR run_plugin '?' loopback "$command" "$(lo_conf "$version")" \
        "CNI_NETNS=$(netns_path "$CREF")" "$@"
    THEIRS=$output THEIRS_STATUS=$status
}

@test "loopback ADD, CHECK and DEL at every version the reference speaks: the same results and the same lo" {
    local version
    for version in 0.1.0 0.2.0 0.3.0 0.3.1 0.4.0 1.0.0; do
        both ADD "$version"
        assert_equal "$MINE_STATUS $THEIRS_STATUS" "0 0"
        assert_equal "$(normalized <<<"$MINE")" "$(normalized <<<"$THEIRS")"
        assert_json '.interfaces[0] | "\(.name) \(.mac) \(.sandbox)"' \
            "lo 00:00:00:00:00:00 $(netns_path "$C1")" "$MINE"
        assert_json '[.ips[] | "\(.address) \(.interface)"] | join(",")' \
            "127.0.0.1/8 0,::1/128 0" "$MINE"
        assert_json .cniVersion "$version" "$MINE"
        assert_equal "$(lo_up "$C1") $(lo_addrs "$C1")" "up [\"127.0.0.1/8\",\"::1/128\"]"
        assert_equal "$(lo_up "$CREF") $(lo_addrs "$CREF")" "$(lo_up "$C1") $(lo_addrs "$C1")"
        if [[ $version == 0.4.0 || $version == 1.0.0 ]]; then
            both CHECK "$version"
            assert_equal "$MINE_STATUS $THEIRS_STATUS" "0 0"
        fi
        both DEL "$version"
        assert_equal "$MINE_STATUS $THEIRS_STATUS $MINE$THEIRS" "0 0 "
        assert_equal "$(lo_up "$C1") $(lo_up "$CREF")" "down down"
        if [[ $version == 0.4.0 || $version == 1.0.0 ]]; then
            both CHECK "$version"
            assert_equal "$MINE_STATUS $THEIRS_STATUS" "1 1"
            assert_json .msg "loopback interface is down" "$MINE"
            assert_json .msg "loopback interface is down" "$THEIRS"
        fi
    done
}

@test "loopback DEL succeeds with a gone namespace and with none, and creates nothing" {
    local gone="/run/netns/$(test_prefix)-gone"
    run_plugin 0 loopback DEL "$(lo_conf 1.0.0)" "CNI_NETNS=$gone"
    assert_output ''
    run_plugin 0 loopback DEL "$(lo_conf 1.0.0)" -CNI_NETNS
    assert_output ''
    [[ ! -e $gone ]] || fail "DEL created $gone"
    # ADD, then the runtime deletes the namespace before DEL
    run_plugin 0 loopback ADD "$(lo_conf 1.0.0)"
    ip netns del "$C1"
    run_plugin 0 loopback DEL "$(lo_conf 1.0.0)"
    assert_output ''
}

@test "loopback bad inputs: errors name the culprit and lo is left alone" {
    run_plugin '!' loopback ADD "$(lo_conf 1.0.0)" -CNI_NETNS
    assert_error 4
    assert_json .msg "required env variables [CNI_NETNS] missing"
    run_plugin '!' loopback ADD "$(lo_conf 9.9.9)"
    assert_error 1 "incompatible CNI versions"
    run_plugin '!' loopback ADD '{"cniVersion":"1.0.0","type":"loopback"}'
    assert_error 7
    run_plugin '!' loopback CHECK "$(lo_conf 0.3.1)"
    assert_error 1
    echo > "$BATS_TEST_TMPDIR/not-a-netns"
    run_plugin '!' loopback ADD "$(lo_conf 1.0.0)" "CNI_NETNS=$BATS_TEST_TMPDIR/not-a-netns"
    assert_output --partial "$BATS_TEST_TMPDIR/not-a-netns"
    assert_equal "$(lo_up "$C1")" down
}

@test "loopback refuses the namespace it runs in (it would take the node's lo down)" {
    skip_if_reference "the reference sets the node's own lo up or down"
    local verb
    for verb in ADD CHECK DEL; do
        run_plugin '!' loopback "$verb" "$(lo_conf 1.0.0)" "CNI_NETNS=$(netns_path "$H")"
        assert_error 8 "refusing to use the plugin's own network namespace as a container's"
    done
    assert_equal "$(lo_up "$H")" up
}

@test "loopback at 1.1.0: the 1.x result, GC and STATUS succeed with nothing to say" {
    skip_if_reference "Debian's reference speaks up to 1.0.0"
    run_plugin 0 loopback ADD "$(lo_conf 1.1.0)"
    assert_json '[.cniVersion, (.ips | length), (has("dns"))] | join(" ")' "1.1.0 2 false"
    run_plugin 0 loopback GC "$(jq -c '. + {"cni.dev/valid-attachments": []}' <<<"$(lo_conf 1.1.0)")"
    assert_output ''
    run_plugin 0 loopback STATUS "$(lo_conf 1.1.0)"
    assert_output ''
    assert_equal "$(lo_up "$C1")" up
}

@test "loopback through libcni: its own network (as containerd's CRI runs it) and chained after the bridge" {
    mkdir -p "$BATS_TEST_TMPDIR/netconf"
    cat >"$BATS_TEST_TMPDIR/netconf/99-loopback.conflist" <<EOF2
{"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}
EOF2
    cat >"$BATS_TEST_TMPDIR/netconf/10-chain.conflist" <<EOF2
{"cniVersion": "1.0.0", "name": "chain", "plugins": [
  {"type": "bridge", "bridge": "cbr0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$DATA_DIR", "ranges": [[{"subnet": "10.99.0.0/24"}]]}},
  {"type": "loopback"}]}
EOF2
    run_client 0 add cni-loopback "$C1" CNI_IFNAME=lo
    assert_json '[.interfaces[0].name, (.ips | length)] | join(" ")' "lo 2"
    assert_equal "$(lo_up "$C1")" up
    run_client 0 check cni-loopback "$C1" CNI_IFNAME=lo
    run_client 0 del cni-loopback "$C1" CNI_IFNAME=lo
    assert_equal "$(lo_up "$C1")" down

    # chained: the bridge's result passes through unchanged; DEL runs in reverse order
    run_client 0 add chain "$C1"
    assert_json '[(.interfaces | length), .interfaces[2].name, .ips[0].address] | join(" ")' \
        "3 eth0 10.99.0.2/24"
    assert_equal "$(lo_up "$C1")" up
    run_client 0 check chain "$C1"
    run_client 0 del chain "$C1"
    assert_equal "$(lo_up "$C1")" down
    run ip -n "$C1" -o link show eth0
    assert_failure
}
