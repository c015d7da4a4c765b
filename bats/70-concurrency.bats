#!/usr/bin/env bats
# I. Concurrency: many ADDs and DELs at once in one H, through the conflist runner started as
# background jobs. Nothing may be lost or duplicated: addresses unique, one bridge per network,
# every pod's masquerade and host port present exactly once, and H back at baseline after.

load helpers

setup() {
    world_setup
    BG_PIDS=()
}
teardown() { world_teardown; }

# bg_runner VERB NET NS CAPS: one runner call in the background; results in par.* files.
bg_runner() {
    local verb=$1 net=$2 ns=$3 cap=$4 f
    f="$BATS_TEST_TMPDIR/par.$net.${ns##*-}.$verb"
    (
        timeout -k 5 120 "$PYTHON3" "$RUNNER" "$verb" --conflist "$NETCONF_DIR/$net.conflist" \
            --cache "$CACHE_DIR" --plugin-dir "$PLUGIN_DIR" --host-ns "$H" \
            --id "ctr-${ns##*-}" --ifname eth0 --netns "$(netns_path "$ns")" --cap "$cap" \
            >"$f.out" 2>"$f.err"
        echo $? >"$f.rc"
    ) 3>&- &
    BG_PIDS+=($!)
}

# wait_bg: wait for the background runner calls (not for echo servers).
wait_bg() {
    wait "${BG_PIDS[@]}"
    BG_PIDS=()
}

# all_ok VERB: every background call of VERB exited 0.
all_ok() {
    local f bad=0
    for f in "$BATS_TEST_TMPDIR"/par.*."$1".rc; do
        if [[ $(cat "$f") != 0 ]]; then
            echo "${f%.rc}: $(cat "${f%.rc}.out" "${f%.rc}.err")" >&2
            bad=1
        fi
    done
    return $bad
}

# start N NET PORTBASE: create containers P<NET>1..N and ADD them all at once (host port
# PORTBASE+i -> 80); sets PODS.
start_pods() {
    local n=$1 net=$2 base=$3 i ns
    for ((i = 1; i <= n; i++)); do
        ns=$(netns_create "P$net$i")
        PODS+=("$ns")
        PODNET[$ns]=$net
    done
    guard_not_init_netns "$H"
    for ((i = 1; i <= n; i++)); do
        ns=$(test_prefix)-P$net$i
        bg_runner add "$net" "$ns" \
            "{\"portMappings\":[{\"hostPort\":$((base + i)),\"containerPort\":80,\"protocol\":\"tcp\"}]}"
    done
}

stop_pods() {
    local ns i=0
    for ns in "${PODS[@]}"; do
        i=$((i + 1))
        bg_runner del "${PODNET[$ns]}" "$ns" \
            "$(jq -c .capabilityArgs "$CACHE_DIR/results/${PODNET[$ns]}-ctr-${ns##*-}-eth0")"
    done
    wait_bg
    all_ok del || fail "some DEL failed"
}

# The reference portmap adds its shared rules check-then-append (iptables -C, then -A), so
# concurrent ADDs can duplicate them: the duplicates found while all pods are up are recorded,
# and asserted last.
record_duplicates() { DUPS=$(fw_duplicate_rules); }
assert_no_duplicates() {
    if [[ -n $DUPS ]]; then
        skip_reference "1.1.1 portmap adds its shared rules check-then-append: concurrent ADDs duplicated $(wc -l <<<"$DUPS") of them"
    fi
    assert_equal "$DUPS" ''
}

@test "12 containers ADDed and DELed concurrently on one network, each with its own host port" {
    declare -A PODNET=()
    PODS=()
    conflist a ".plugins[0].ipam.ranges = [[{subnet: \"10.99.0.0/24\"}]]"
    start_pods 12 a 8100
    wait_bg
    all_ok add || fail "some ADD failed"

    run reservations a
    assert_equal "${#lines[@]}" 12
    assert_equal "$(cut -d' ' -f1 <<<"$output" | sort -u | wc -l)" 12
    assert_equal "$(ip -n "$H" -j link show type bridge | jq length)" 1
    run host_veths
    assert_equal "${#lines[@]}" 12
    local ns i=0
    for ns in "${PODS[@]}"; do
        [[ -n $(pod_ip "$ns") ]] || fail "$ns has no address"
    done
    run fw_addresses
    assert_equal "${#lines[@]}" 12
    for ((i = 1; i <= 12; i++)); do
        fw_mentions_port $((8100 + i)) || fail "port $((8100 + i)) not published"
    done
    record_duplicates
    serve p3 "$(test_prefix)-Pa3" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8103 p3
    serve p12 "$(test_prefix)-Pa12" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8112 p12

    stop_pods
    assert_clean a
    for ((i = 1; i <= 12; i++)); do
        fw_mentions_port $((8100 + i)) && fail "port $((8100 + i)) still published"
    done
    assert_no_duplicates
}

@test "concurrent ADDs on two networks and bridges with ipMasq and portmap in one H" {
    declare -A PODNET=()
    PODS=()
    conflist a ".plugins[0].ipam.ranges = [[{subnet: \"10.99.0.0/24\"}]]"
    conflist b ".plugins[0].bridge = \"cbr1\" | .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]"
    start_pods 6 a 8100
    start_pods 6 b 8200
    wait_bg
    all_ok add || fail "some ADD failed"

    run reservations a
    assert_equal "${#lines[@]}" 6
    run reservations b
    assert_equal "${#lines[@]}" 6
    assert_equal "$(ip -n "$H" -j link show type bridge | jq -r '[.[].ifname] | sort | join(",")')" cbr0,cbr1
    run fw_addresses
    assert_equal "${#lines[@]}" 12
    local i
    for ((i = 1; i <= 6; i++)); do
        fw_mentions_port $((8100 + i)) || fail "port $((8100 + i)) not published"
        fw_mentions_port $((8200 + i)) || fail "port $((8200 + i)) not published"
    done
    record_duplicates
    serve a "$O" tcp 9000
    assert_reach "$(test_prefix)-Pa2" tcp "$O_IP4" 9000 a
    assert_equal "$(server_peer a)" "$H_IP4"
    serve b "$O" tcp 9001
    assert_reach "$(test_prefix)-Pb5" tcp "$O_IP4" 9001 b
    assert_equal "$(server_peer b)" "$H_IP4"
    serve c "$(test_prefix)-Pb6" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8206 c

    stop_pods
    assert_clean a b
    assert_no_duplicates
}
