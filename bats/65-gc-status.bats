#!/usr/bin/env bats
# H. GC and STATUS (cniVersion 1.1.0), through the conflist runner. To see the plugins' own GC
# at work (not the runtime's synthesized DELs), the runtime "forgets" the attachments first,
# as after a crash: their cache entries are removed, so only the plugins know what to clean.

load helpers

REF_NO_GC="1.1.1 supports cniVersion up to 1.0.0: no GC or STATUS"

setup() {
    skip_reference "$REF_NO_GC"
    world_setup
    SPY=$(spy_ipam)
    conflist "$NET" ".plugins[0].ipam.type = \"spy\" |
        .plugins[0].ipam.spyLog = \"$BATS_TEST_TMPDIR/spy.log\""
    PATHS="$SPY:$PLUGIN_DIR"
}
teardown() { world_teardown; }

PM1='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
PM2='{"portMappings":[{"hostPort":8081,"containerPort":80,"protocol":"tcp"}]}'

forget() { rm -f "$CACHE_DIR/results/$NET-$1-eth0"; }

@test "GC removes what is not in valid-attachments, keeps the rest working, is forwarded to IPAM, and is idempotent" {
    local C2
    C2=$(netns_create C2)
    cni 0 add "$C1" cap="$PM1" path="$PATHS"
    cni 0 add "$C2" cap="$PM2" path="$PATHS"
    forget ctr-C2
    : >"$BATS_TEST_TMPDIR/spy.log"

    cni 0 gc "" valid="ctr-C1/eth0" path="$PATHS"
    assert_output ''
    run cat "$BATS_TEST_TMPDIR/spy.log"
    assert_output GC
    run reservations
    assert_output '10.99.0.2 ctr-C1/eth0'
    run fw_addresses
    assert_output 10.99.0.2
    fw_mentions_port 8081 && fail "C2's port is still published: $(fw_dump)"
    fw_mentions_port 8080 || fail "C1's port went away"
    run records
    refute_output --partial ctr-C2
    # C1 is untouched: CHECK passes, traffic flows both ways
    cni 0 check "$C1" path="$PATHS"
    serve in "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 in
    serve out "$O" tcp 9000
    assert_reach "$C1" tcp "$O_IP4" 9000 out
    assert_equal "$(server_peer out)" "$H_IP4"

    # an empty list: nothing is valid any more
    forget ctr-C1
    cni 0 gc "" valid="" path="$PATHS"
    run reservations
    assert_output ''
    run fw_addresses
    assert_output ''
    fw_mentions_port 8080 && fail "C1's port is still published: $(fw_dump)"
    run records
    assert_output ''
    # and again: nothing left to do, still success
    cni 0 gc "" valid="" path="$PATHS"
    assert_output ''
}

@test "STATUS: healthy network passes silently and reaches IPAM; exhausted host-local gives 50; no CNI_PATH gives 4" {
    cni 0 status "" path="$PATHS"
    assert_output ''
    run cat "$BATS_TEST_TMPDIR/spy.log"
    assert_output STATUS

    local cfg
    cfg=$(jq -nc --arg dd "$DATA_DIR" '{cniVersion: "1.1.0", name: "tiny", type: "host-local",
        ipam: {type: "host-local", dataDir: $dd,
               ranges: [[{subnet: "10.97.0.0/29", rangeStart: "10.97.0.2", rangeEnd: "10.97.0.2"}]]}}')
    run_plugin 0 host-local STATUS "$cfg" -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME
    assert_output ''
    run_plugin 0 host-local ADD "$cfg" CNI_CONTAINERID=only
    run_plugin '!' host-local STATUS "$cfg" -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME
    assert_json .code 50
    run_plugin '!' host-local STATUS "$cfg" -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME -CNI_PATH
    assert_json .code 4
    # released again: available again
    run_plugin 0 host-local DEL "$cfg" CNI_CONTAINERID=only
    run_plugin 0 host-local STATUS "$cfg" -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME
}
