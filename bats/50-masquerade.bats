#!/usr/bin/env bats
# F. Masquerade and the outside namespace O (which has no default route: a reply reaches the
# pod only if H masqueraded it, or if O was given a route back). Runtime: the libcni client.

load helpers

setup() {
    RUNTIME=libcni
    world_setup
}
teardown() { world_teardown; }

@test "ipMasq: pod to outside is masqueraded to H's address, v4 and v6" {
    conflist "$NET" "$DS"
    cni 0 add "$C1"
    settle_v6 "$H"
    serve out4 "$O" tcp 9000
    assert_reach "$C1" tcp "$O_IP4" 9000 out4
    assert_equal "$(server_peer out4)" "$H_IP4"
    serve out6 "$O" udp 9000
    assert_reach "$C1" udp "$O_IP6" 9000 out6
    assert_equal "$(server_peer out6)" "$H_IP6"
}

@test "no masquerade inside the subnet or towards H itself; multicast is excluded from masquerade" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1"
    cni 0 add "$C2"
    serve pod2 "$C2" tcp 7000
    assert_reach "$C1" tcp 10.99.0.3 7000 pod2
    assert_equal "$(server_peer pod2)" 10.99.0.2
    serve node "$H" tcp 7001 node "$H_IP4"
    assert_reach "$C1" tcp "$H_IP4" 7001 node
    assert_equal "$(server_peer node)" 10.99.0.2
    # multicast destinations never get masqueraded, whichever firewall tool wrote the rules
    run fw_dump
    assert_output --regexp '224\.0\.0\.0/4'
}

@test "ipMasq false: no way back without a route in O; with one, O sees the pod's own address" {
    conflist "$NET" "$DS | .plugins[0].ipMasq = false"
    cni 0 add "$C1"
    settle_v6 "$H"
    serve a "$O" tcp 9000
    refute_reach "$C1" tcp "$O_IP4" 9000
    ip -n "$O" route add "$POD_NET4" via "$H_IP4"
    ip -n "$O" -6 route add "$POD_NET6" via "$H_IP6"
    assert_reach "$C1" tcp "$O_IP4" 9000 a
    assert_equal "$(server_peer a)" 10.99.0.2
    serve b "$O" tcp 9001
    assert_reach "$C1" tcp "$O_IP6" 9001 b
    assert_equal "$(server_peer b)" fd00:99::2
    run fw_addresses
    assert_output ''
}

@test "forwarding is enabled per gateway family" {
    assert_equal "$(ns_exec "$H" sysctl -n net.ipv4.ip_forward)" 0
    assert_equal "$(ns_exec "$H" sysctl -n net.ipv6.conf.all.forwarding)" 0
    conflist "$NET" "$NOPORTMAP"
    cni 0 add "$C1"
    assert_equal "$(ns_exec "$H" sysctl -n net.ipv4.ip_forward)" 1
    conflist v6 "$NOPORTMAP | $V6ONLY | .plugins[0].bridge = \"cbr6\""
    cni 0 add "$C1" net=v6 if=eth1
    assert_equal "$(ns_exec "$H" sysctl -n net.ipv6.conf.all.forwarding)" 1
}

@test "masquerade is per attachment: DEL of one container, or of one of two attachments, keeps the others'" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1"
    cni 0 add "$C2"
    cni 0 del "$C1"
    serve a "$O" tcp 9000
    assert_reach "$C2" tcp "$O_IP4" 9000 a
    assert_equal "$(server_peer a)" "$H_IP4"

    skip_reference "the iptables masquerade chain is keyed by network and container, not ifname: DEL of eth1 removes eth0's too"
    # a second attachment of C2 to the same network, then DEL of that one only
    cni 0 add "$C2" if=eth1
    cni 0 del "$C2" if=eth1
    serve b "$O" tcp 9001
    assert_reach "$C2" tcp "$O_IP4" 9001 b
    assert_equal "$(server_peer b)" "$H_IP4"
    run fw_addresses
    assert_output 10.99.0.3
}
