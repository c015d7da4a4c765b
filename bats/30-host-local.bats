#!/usr/bin/env bats
# C. host-local: allocation rules, the on-disk store, requested IPs, exhaustion, routes and DNS,
# duplicate ADD. Run standalone (run_plugin host-local) where only IPAM is under test, and
# through bridge where what matters is what the container ends up with.

load helpers

setup() { world_setup; }
teardown() { world_teardown; }

# hl_config JQ_FILTER: a standalone host-local config on $NET in $DATA_DIR.
hl_config() {
    jq -nc --arg v "$PLUGIN_CNI_VERSION" --arg dd "$DATA_DIR" --arg n "$NET" \
        "{cniVersion: \$v, name: \$n, type: \"host-local\",
          ipam: {type: \"host-local\", dataDir: \$dd, ranges: [[{subnet: \"10.99.0.0/24\"}]]}}
         | ${1:-.}"
}

# hl EXPECTED COMMAND ID [VAR=VALUE...]: host-local with $HL as config, container ID ID.
hl() {
    local expected=$1 cmd=$2 id=$3
    shift 3
    run_plugin "$expected" host-local "$cmd" "$HL" "CNI_CONTAINERID=$id" "$@"
}

@test "allocation: never network, gateway or broadcast; ranges in order; rangeStart/End; round robin" {
    HL=$(hl_config '.ipam.ranges = [[{subnet: "10.99.0.0/29"},
        {subnet: "10.99.1.0/29", rangeStart: "10.99.1.3", rangeEnd: "10.99.1.4"}]]')
    local id got=()
    for id in a1 a2; do
        hl 0 ADD "$id"
        got+=("$(jq -r '.ips[0].address' <<<"$output")")
    done
    assert_json '.ips[0].gateway' 10.99.0.1
    hl 0 DEL a1
    assert_output ''
    # round robin: the address just released is not handed out again at once
    for id in a3 a4 a5 a6 a7 a8; do
        hl 0 ADD "$id"
        got+=("$(jq -r '.ips[0].address' <<<"$output")")
    done
    assert_equal "${got[*]}" \
        "10.99.0.2/29 10.99.0.3/29 10.99.0.4/29 10.99.0.5/29 10.99.0.6/29 10.99.1.3/29 10.99.1.4/29 10.99.0.2/29"
    # a2..a8 hold all seven usable addresses now
    hl '!' ADD a9
    assert_regex "$(jq -r .msg <<<"$output")" 'no IP addresses available'
    run reservations
    refute_output --regexp '^10\.99\.0\.(0|1|7) |^10\.99\.1\.(2|5) '
    assert_equal "${#lines[@]}" 7
}

@test "on-disk store: one file per IP holding 'id\\r\\nifname', last_reserved_ip.N, lock; DEL removes only the IP files" {
    local dir="$DATA_DIR/$NET"
    HL=$(hl_config '.ipam.ranges = [[{subnet: "10.99.0.0/24"}], [{subnet: "fd00:99::/64"}]]')
    hl 0 ADD ctr-1 CNI_IFNAME=net7
    assert_json '[.ips[].address] | join(",")' 10.99.0.2/24,fd00:99::2/64
    run od -An -c "$dir/10.99.0.2"
    assert_equal "$(echo $output)" 'c t r - 1 \r \n n e t 7'
    assert_equal "$(cat "$dir/fd00:99::2" | od -An -c | tr -s ' ')" "$(printf 'ctr-1\r\nnet7' | od -An -c | tr -s ' ')"
    assert_equal "$(cat "$dir/last_reserved_ip.0")" 10.99.0.2
    assert_equal "$(cat "$dir/last_reserved_ip.1")" fd00:99::2
    assert_equal "$(wc -c <"$dir/last_reserved_ip.0")" 9
    assert [ -f "$dir/lock" ]
    run ls "$dir"
    assert_equal "$(echo $output)" '10.99.0.2 fd00:99::2 last_reserved_ip.0 last_reserved_ip.1 lock'

    hl 0 DEL ctr-1 CNI_IFNAME=net7
    run ls "$dir"
    assert_equal "$(echo $output)" 'last_reserved_ip.0 last_reserved_ip.1 lock'
}

@test "the store is shared with the reference host-local in both directions" {
    [[ -x $REFERENCE_DIR/host-local ]] || skip "no reference plugins in $REFERENCE_DIR"
    HL=$(hl_config '.cniVersion = "1.0.0"')
    local ref="$BATS_TEST_TMPDIR/ref"
    mkdir -p "$ref"
    ln -s "$REFERENCE_DIR/host-local" "$ref/host-local"
    # the reference reserves, ours sees it (no double allocation) and releases it
    PLUGIN_DIR=$ref hl 0 ADD r1
    assert_json '.ips[0].address' 10.99.0.2/24
    hl 0 ADD o1
    assert_json '.ips[0].address' 10.99.0.3/24
    hl 0 DEL r1
    run reservations
    assert_output '10.99.0.3 o1/eth0'
    # ours reserves, the reference continues the round robin after it and releases ours
    PLUGIN_DIR=$ref hl 0 ADD r2
    assert_json '.ips[0].address' 10.99.0.4/24
    PLUGIN_DIR=$ref hl 0 DEL o1
    run reservations
    assert_output '10.99.0.4 r2/eth0'
}

@test "requested IPs via CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips: granted when free, refused otherwise" {
    HL=$(hl_config '.ipam.ranges = [[{subnet: "10.99.0.0/24", rangeStart: "10.99.0.10", rangeEnd: "10.99.0.20"}],
        [{subnet: "fd00:99::/64"}]]')
    hl 0 ADD a1 CNI_ARGS=IP=10.99.0.15
    assert_json '.ips[0].address' 10.99.0.15/24
    local base=$HL
    HL=$(jq -c '.args = {cni: {ips: ["10.99.0.12", "fd00:99::abcd"]}}' <<<"$base")
    hl 0 ADD a2
    assert_json '[.ips[].address] | join(",")' 10.99.0.12/24,fd00:99::abcd/64
    HL=$(jq -c '.runtimeConfig = {ips: ["10.99.0.18/24"]}' <<<"$base")
    hl 0 ADD a3
    assert_json '.ips[0].address' 10.99.0.18/24

    local before
    before=$(reservations)
    HL=$base
    hl '!' ADD b1 CNI_ARGS=IP=10.99.0.15 # taken
    assert_regex "$(jq -r .msg <<<"$output")" '10\.99\.0\.15'
    hl '!' ADD b2 CNI_ARGS=IP=10.99.0.30 # outside rangeStart..rangeEnd
    hl '!' ADD b3 CNI_ARGS=IP=10.99.0.1 # the gateway
    hl '!' ADD b4 CNI_ARGS=IP=192.0.2.7 # in no range at all: cannot be consumed
    HL=$(jq -c '.runtimeConfig = {ips: ["10.99.0.16", "10.99.0.17"]}' <<<"$base")
    hl '!' ADD b5 # two v4 addresses, one v4 range set: one cannot be consumed
    assert_equal "$(reservations)" "$before"
}

@test "exhaustion through bridge: the ADD that finds no address fails cleanly" {
    local C2 C3 nveth
    C2=$(netns_create C2)
    C3=$(netns_create C3)
    conflist "$NET" "$NOPORTMAP | .plugins[0].ipam.ranges = [[{subnet: \"10.99.0.0/29\",
        rangeStart: \"10.99.0.2\", rangeEnd: \"10.99.0.3\"}]]"
    cni 0 add "$C1"
    cni 0 add "$C2"
    cni 1 add "$C3"
    assert_json '.code | type' number
    assert_regex "$(jq -r .msg <<<"$output")" 'no IP addresses available|10\.99\.0\.2-10\.99\.0\.3'
    run ip -n "$C3" link show eth0
    assert_failure
    run host_veths
    assert_equal "${#lines[@]}" 2
    run reservations
    assert_output "$(printf '10.99.0.2 ctr-C1/eth0\n10.99.0.3 ctr-C2/eth0')"
    run fw_addresses
    assert_output "$(printf '10.99.0.2\n10.99.0.3')"
}

@test "routes and DNS from the IPAM config reach the result and the container" {
    printf 'nameserver 192.0.2.53\nnameserver 2001:db8::53\ndomain example.test\nsearch a.test b.test\noptions ndots:2\n' \
        >"$BATS_TEST_TMPDIR/resolv.conf"
    conflist "$NET" "$NOPORTMAP | .plugins[0].isDefaultGateway = false |
        .plugins[0].ipam.routes = [{dst: \"192.0.2.0/24\"}, {dst: \"203.0.113.0/24\", gw: \"10.99.0.254\"}] |
        .plugins[0].ipam.resolvConf = \"$BATS_TEST_TMPDIR/resolv.conf\""
    cni 0 add "$C1"
    local r=$output
    assert_json '[.routes[] | "\(.dst) \(.gw // "-")"] | join(",")' '192.0.2.0/24 -,203.0.113.0/24 10.99.0.254'
    run ip -n "$C1" -j route show
    assert_json '[.[] | select(.dst == "192.0.2.0/24") | .gateway] | join(",")' "$POD_GW4"
    assert_json '[.[] | select(.dst == "203.0.113.0/24") | .gateway] | join(",")' 10.99.0.254
    assert_json '[.[] | select(.dst == "default")] | length' 0
    skip_reference "1.1.1 bridge replaces the IPAM's DNS with its own (empty) dns config"
    assert_json '.dns.nameservers | join(",")' '192.0.2.53,2001:db8::53' "$r"
    assert_json '.dns.domain' example.test "$r"
    assert_json '.dns.search | join(",")' 'a.test,b.test' "$r"
    assert_json '.dns.options | join(",")' 'ndots:2' "$r"
}

@test "ADD twice for one (container, ifname) without DEL: the second fails, the first keeps working" {
    HL=$(hl_config)
    hl 0 ADD dup
    hl '!' ADD dup
    assert_regex "$(jq -r .msg <<<"$output")" 'dup|duplicate|already'
    run reservations
    assert_output '10.99.0.2 dup/eth0'

    # the same through a runtime that, like bare libcni, does not clean up after a failed ADD
    conflist other "$NOPORTMAP | .plugins[0].bridge = \"cbr1\" |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]" 1.0.0
    cni 0 add "$C1" net=other via=libcni
    cni 1 add "$C1" net=other via=libcni
    run reservations other
    assert_output '10.98.0.2 ctr-C1/eth0'
    assert_equal "$(pod_ip "$C1")" 10.98.0.2
    serve pod "$C1" tcp 8000
    assert_reach "$H" tcp 10.98.0.2 8000 pod
}
