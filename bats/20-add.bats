#!/usr/bin/env bats
# B. bridge + host-local ADD, driven through the real libcni client (cniVersion 1.0.0).
# Each test builds its own world (H, O, containers) and asserts what ADD left behind: links,
# addresses, routes, flags, reservations, the result, and real bytes through the echo tool.

load helpers

setup() {
    RUNTIME=libcni
    world_setup
}
teardown() { world_teardown; }

# assert_attachment RESULT NS BRIDGE ADDR/PREFIX... : what one ADD must have built.
assert_attachment() {
    local result=$1 ns=$2 bridge=$3 addr ip gw fam hostveth
    shift 3
    assert_json '.interfaces | length' 3 "$result"
    assert_json '.interfaces[0].name' "$bridge" "$result"
    assert_json '.interfaces[2].name' eth0 "$result"
    assert_json '.interfaces[2].sandbox' "$(netns_path "$ns")" "$result"
    assert_json '[.interfaces[0,1] | has("sandbox")] | any' false "$result"
    assert_json '[.ips[] | .interface] | unique | tojson' '[2]' "$result"
    assert_json '.ips | length' $# "$result"
    hostveth=$(jq -r '.interfaces[1].name' <<<"$result")

    # the bridge: a bridge, up, holding the gateway of every family
    run link_json "$H" "$bridge"
    assert_json .linkinfo.info_kind bridge
    assert_json '.flags | index("UP") != null' true
    assert_json .address "$(jq -r '.interfaces[0].mac' <<<"$result")"
    # the host end: a veth, up, port of the bridge, peer of the container's eth0
    run link_json "$H" "$hostveth"
    assert_json .linkinfo.info_kind veth
    assert_json .master "$bridge"
    assert_json .linkinfo.info_slave_kind bridge
    assert_json .operstate UP
    assert_json .address "$(jq -r '.interfaces[1].mac' <<<"$result")"
    assert_json .link_index "$(ip -n "$ns" -j link show eth0 | jq '.[0].ifindex')"
    # the container end
    run link_json "$ns" eth0
    assert_json .linkinfo.info_kind veth
    assert_json .operstate UP
    assert_json .address "$(jq -r '.interfaces[2].mac' <<<"$result")"
    # lo untouched (up, loopback addresses only)
    run ip -n "$ns" -j addr show lo
    assert_json '[.[0].addr_info[].local // empty] | sort | join(",")' '127.0.0.1,::1'

    for addr in "$@"; do
        ip=${addr%/*}
        [[ $ip == *:* ]] && fam=6 || fam=4
        gw=$(jq -r --arg a "$addr" '.ips[] | select(.address == $a) | .gateway' <<<"$result")
        [[ -n $gw && $gw != null ]] || fail "result has no IP $addr with a gateway: $result"
        run ip -n "$ns" -j -"$fam" addr show dev eth0 scope global
        assert_json '[.[0].addr_info[] | select(.local) | "\(.local)/\(.prefixlen)"] | join(",")' "$addr"
        run ip -n "$H" -j -"$fam" addr show dev "$bridge" scope global
        assert_json "[.[0].addr_info[] | select(.local == \"$gw\")] | length" 1
        run ip -n "$ns" -j -"$fam" route show default
        assert_json '[.[] | "\(.gateway) \(.dev)"] | join(",")' "$gw eth0"
    done
}

@test "ADD v4, v6 and dual stack: bridge, veth pair, addresses, default routes, result" {
    local C2 C3
    C2=$(netns_create C2)
    C3=$(netns_create C3)
    conflist net4 "$NOPORTMAP | .plugins[0].bridge = \"cbr4\""
    conflist net6 "$NOPORTMAP | $V6ONLY | .plugins[0].bridge = \"cbr6\""
    conflist netds "$NOPORTMAP | .plugins[0].bridge = \"cbrd\" |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}], [{subnet: \"fd00:98::/64\"}]]"
    local r

    cni 0 add "$C1" net=net4
    r=$output
    assert_attachment "$r" "$C1" cbr4 10.99.0.2/24
    cni 0 add "$C2" net=net6
    r=$output
    assert_attachment "$r" "$C2" cbr6 fd00:99::2/64
    cni 0 add "$C3" net=netds
    r=$output
    assert_attachment "$r" "$C3" cbrd 10.98.0.2/24 fd00:98::2/64
    assert_json '[.ips[].address] | join(",")' 10.98.0.2/24,fd00:98::2/64 "$r"
    assert_json '[.routes[] | "\(.dst) \(.gw)"] | sort | join(",")' '0.0.0.0/0 10.98.0.1,::/0 fd00:98::1' "$r"

    run reservations netds
    assert_output "$(printf '10.98.0.2 ctr-C3/eth0\nfd00:98::2 ctr-C3/eth0')"
}

@test "ADD returns with no tentative IPv6 address in the container; H and pod talk both ways, v4 and v6" {
    conflist "$NET" "$DS"
    cni 0 add "$C1"
    # right at return, before any wait: the container's addresses are usable
    run ip -n "$C1" -6 addr show tentative
    assert_output ''
    run ip -n "$C1" -6 addr show dadfailed
    assert_output ''
    settle_v6 "$H" # the bridge's own address is the node's business

    serve pod4 "$C1" tcp 8000
    assert_reach "$H" tcp 10.99.0.2 8000 pod4
    assert_equal "$(server_peer pod4)" "$POD_GW4"
    serve pod6 "$C1" tcp 8000
    assert_reach "$H" tcp fd00:99::2 8000 pod6
    assert_equal "$(server_peer pod6)" "$POD_GW6"

    serve node4 "$H" tcp 9000
    assert_reach "$C1" tcp "$POD_GW4" 9000 node4
    assert_equal "$(server_peer node4)" 10.99.0.2
    serve node6 "$H" udp 9000
    assert_reach "$C1" udp "$POD_GW6" 9000 node6
    assert_equal "$(server_peer node6)" fd00:99::2
}

@test "bridge MAC is its own and stays put when containers come and go" {
    local C2 mac veth1 veth2
    C2=$(netns_create C2)
    conflist "$NET" "$NOPORTMAP"
    cni 0 add "$C1"
    mac=$(link_json "$H" cbr0 | jq -r .address)
    veth1=$(jq -r '.interfaces[1].mac' <<<"$output")
    assert_json '.interfaces[0].mac' "$mac"
    cni 0 add "$C2"
    veth2=$(jq -r '.interfaces[1].mac' <<<"$output")
    assert_json '.interfaces[0].mac' "$mac"
    assert_not_equal "$mac" "$veth1"
    assert_not_equal "$mac" "$veth2"
    assert_not_equal "$mac" "$(link_json "$C1" eth0 | jq -r .address)"
    assert_not_equal "$mac" "$(link_json "$C2" eth0 | jq -r .address)"
    cni 0 del "$C1"
    assert_equal "$(link_json "$H" cbr0 | jq -r .address)" "$mac"
    cni 0 del "$C2"
    assert_equal "$(link_json "$H" cbr0 | jq -r .address)" "$mac"
}

@test "an existing bridge is reused: same ifindex, its addresses kept, the gateway added" {
    local C2 idx0 idx1
    C2=$(netns_create C2)
    ip -n "$H" link add cbr0 type bridge
    ip -n "$H" addr add fd00:aa::1/64 dev cbr0 nodad
    ip -n "$H" link add cbr1 type bridge
    ip -n "$H" addr add 10.98.0.1/24 dev cbr1
    idx0=$(link_json "$H" cbr0 | jq .ifindex)
    idx1=$(link_json "$H" cbr1 | jq .ifindex)
    conflist "$NET" "$NOPORTMAP"
    conflist other "$NOPORTMAP | .plugins[0].bridge = \"cbr1\" |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]"

    cni 0 add "$C1"
    cni 0 add "$C2" net=other
    assert_equal "$(link_json "$H" cbr0 | jq .ifindex)" "$idx0"
    assert_equal "$(link_json "$H" cbr1 | jq .ifindex)" "$idx1"
    run ip -n "$H" -j addr show dev cbr0 scope global
    assert_json '[.[0].addr_info[] | select(.local) | "\(.local)/\(.prefixlen)"] | sort | join(",")' \
        '10.99.0.1/24,fd00:aa::1/64'
    run ip -n "$H" -j addr show dev cbr1 scope global
    assert_json '[.[0].addr_info[] | select(.local) | "\(.local)/\(.prefixlen)"] | join(",")' '10.98.0.1/24'
    run ip -n "$H" -o link show master cbr0
    assert_equal "${#lines[@]}" 1
    serve c2 "$C2" tcp 8000
    assert_reach "$H" tcp 10.98.0.2 8000 c2
}

@test "options: mtu on both veth ends, hairpinMode, isGateway false, isDefaultGateway" {
    local C2 hv
    C2=$(netns_create C2)
    conflist "$NET" "$NOPORTMAP | .plugins[0].mtu = 1400"
    conflist plain "$NOPORTMAP | .plugins[0] |= (.bridge = \"cbr2\" | .isGateway = false |
        .isDefaultGateway = false | .hairpinMode = false | .ipMasq = false) |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]"

    cni 0 add "$C1"
    hv=$(jq -r '.interfaces[1].name' <<<"$output")
    assert_equal "$(link_json "$C1" eth0 | jq .mtu)" 1400
    run link_json "$H" "$hv"
    assert_json .mtu 1400
    assert_json .linkinfo.info_slave_data.hairpin true
    run ip -n "$C1" -j route show default
    assert_json '.[0].gateway' "$POD_GW4"

    cni 0 add "$C2" net=plain
    hv=$(jq -r '.interfaces[1].name' <<<"$output")
    assert_json '.ips[0].address' 10.98.0.2/24
    run link_json "$H" "$hv"
    assert_json .linkinfo.info_slave_data.hairpin false
    assert_json .mtu 1500
    run ip -n "$H" -j addr show dev cbr2 scope global
    assert_json '[.[].addr_info[] | select(.local)] | length' 0
    run ip -n "$C2" -j route show default
    assert_output '[]'
    # L2 only between pod and node: no address on the bridge, so H cannot reach the pod
    serve c2 "$C2" tcp 8000
    refute_reach "$H" tcp 10.98.0.2 8000
}

@test "container MAC from runtimeConfig.mac, args.cni.mac and CNI_ARGS MAC=" {
    local C2 C3
    C2=$(netns_create C2)
    C3=$(netns_create C3)
    conflist "$NET" "$NOPORTMAP | .plugins[0].capabilities = {mac: true}"
    conflist argsnet "$NOPORTMAP | .plugins[0].bridge = \"cbr1\" |
        .plugins[0].args = {cni: {mac: \"02:00:00:00:00:22\"}} |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]"

    cni 0 add "$C1" cap='{"mac":"02:00:00:00:00:11"}'
    assert_json '.interfaces[2].mac' 02:00:00:00:00:11
    assert_equal "$(link_json "$C1" eth0 | jq -r .address)" 02:00:00:00:00:11
    cni 0 add "$C2" net=argsnet
    assert_json '.interfaces[2].mac' 02:00:00:00:00:22
    assert_equal "$(link_json "$C2" eth0 | jq -r .address)" 02:00:00:00:00:22
    cni 0 add "$C3" args='IgnoreUnknown=1;MAC=02:00:00:00:00:33'
    assert_json '.interfaces[2].mac' 02:00:00:00:00:33
    assert_equal "$(link_json "$C3" eth0 | jq -r .address)" 02:00:00:00:00:33
    # the MAC really is on the wire: H learnt it for the pod's address
    serve c3 "$C3" tcp 8000
    assert_reach "$H" tcp 10.99.0.3 8000 c3
    run ip -n "$H" -j neigh show 10.99.0.3
    assert_json '.[0].lladdr' 02:00:00:00:00:33
}

@test "two containers, dual stack: sequential addresses, pod to pod and node to pod over TCP and UDP" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET" "$DS"
    cni 0 add "$C1"
    assert_json '[.ips[].address] | join(",")' 10.99.0.2/24,fd00:99::2/64
    cni 0 add "$C2"
    assert_json '[.ips[].address] | join(",")' 10.99.0.3/24,fd00:99::3/64
    run host_veths
    assert_equal "${#lines[@]}" 2
    settle_v6 "$H"

    serve a "$C2" tcp 7000
    assert_reach "$C1" tcp 10.99.0.3 7000 a
    assert_equal "$(server_peer a)" 10.99.0.2
    serve b "$C2" udp 7000
    assert_reach "$C1" udp fd00:99::3 7000 b
    assert_equal "$(server_peer b)" fd00:99::2
    serve c "$C1" tcp 7000
    assert_reach "$C2" tcp fd00:99::2 7000 c
    assert_equal "$(server_peer c)" fd00:99::3
    serve d "$C1" udp 7000
    assert_reach "$H" udp 10.99.0.2 7000 d
    serve e "$C2" tcp 7001
    assert_reach "$H" tcp fd00:99::3 7001 e
}

@test "second attachment of one container (eth1, another network): both work; DEL eth1 keeps eth0" {
    conflist "$NET" "$NOPORTMAP"
    conflist net2 "$NOPORTMAP | .plugins[0].bridge = \"cbr1\" | .plugins[0].isDefaultGateway = false |
        .plugins[0].ipam.ranges = [[{subnet: \"10.98.0.0/24\"}]]"
    cni 0 add "$C1" id=pod1
    cni 0 add "$C1" id=pod1 net=net2 if=eth1
    assert_json '.interfaces[2].name' eth1
    assert_json '.ips[0].address' 10.98.0.2/24
    assert_equal "$(pod_ip "$C1" 4 eth0)" 10.99.0.2
    assert_equal "$(pod_ip "$C1" 4 eth1)" 10.98.0.2
    run reservations net2
    assert_output '10.98.0.2 pod1/eth1'
    run reservations
    assert_output '10.99.0.2 pod1/eth0'
    serve a "$C1" tcp 8000
    assert_reach "$H" tcp 10.99.0.2 8000 a
    serve b "$C1" tcp 8000
    assert_reach "$H" tcp 10.98.0.2 8000 b

    cni 0 del "$C1" id=pod1 net=net2 if=eth1
    run ip -n "$C1" link show eth1
    assert_failure
    run reservations net2
    assert_output ''
    run reservations
    assert_output '10.99.0.2 pod1/eth0'
    assert_equal "$(pod_ip "$C1" 4 eth0)" 10.99.0.2
    serve c "$C1" tcp 8000
    assert_reach "$H" tcp 10.99.0.2 8000 c
}

@test "ADD fails when the ifname already exists in the container; nothing is left behind" {
    ip -n "$C1" link add eth0 type veth peer name peer0
    conflist "$NET"
    cni 1 add "$C1"
    assert_regex "$stderr" 'eth0'
    run host_veths
    assert_output ''
    run reservations
    assert_output ''
    # the container's own eth0 is untouched
    run link_json "$C1" eth0
    assert_json .link peer0
    run fw_addresses
    assert_output ''
}

@test "a failure after IPAM allocated (bridge holds another IPv4 address) releases the address" {
    ip -n "$H" link add cbr0 type bridge
    ip -n "$H" addr add 10.50.0.1/24 dev cbr0
    conflist "$NET"
    cni 1 add "$C1"
    assert_regex "$stderr" '10\.50\.0\.1|10\.99\.0\.1|address'
    run reservations
    assert_output ''
    run fw_addresses
    assert_output ''
    skip_reference "a failed ADD leaves the host veth and the container's eth0 behind"
    run host_veths
    assert_output ''
    run ip -n "$C1" link show eth0
    assert_failure
    run ip -n "$H" -j addr show dev cbr0 scope global
    assert_json '[.[0].addr_info[] | select(.local) | "\(.local)/\(.prefixlen)"] | join(",")' 10.50.0.1/24
}

@test "ADD with a CNI_NETNS that does not exist fails and creates nothing" {
    conflist "$NET"
    cni 1 add "/run/netns/$(test_prefix)-nosuch" id=ghost
    run reservations
    assert_output ''
    run fw_addresses
    assert_output ''
    run host_veths
    assert_output ''
    skip_reference "creates the bridge before it opens the netns"
    run ip -n "$H" -o link show
    assert_equal "$(awk -F': ' '{print $2}' <<<"$output" | sed 's/@.*//' | sort | tr '\n' ' ')" 'eth-o lo '
}
