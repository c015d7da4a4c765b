#!/usr/bin/env bats
# G. portmap chained after bridge (capability portMappings), through the conflist runner.
# Every path a published port can be reached by is exercised with real bytes: from outside
# (O), from the node itself (own address, 127.0.0.1), from the pod itself (hairpin) and from a
# neighbour pod, per protocol and family; the peer the server saw tells whether NAT happened.

load helpers

setup() { world_setup; }
teardown() { world_teardown; }

# pm JSON_ARRAY: capability args with these port mappings.
pm() { echo "{\"portMappings\":$1}"; }
tcp() { echo "{\"hostPort\":$1,\"containerPort\":$2,\"protocol\":\"tcp\"${3:+,\"hostIP\":\"$3\"}}"; }
udp() { echo "{\"hostPort\":$1,\"containerPort\":$2,\"protocol\":\"udp\"${3:+,\"hostIP\":\"$3\"}}"; }

# udp_from NS SPORT IP PORT TIMEOUT: datagrams from a fixed source port until one is answered;
# prints the answer (after the echoed payload). Fails after TIMEOUT seconds.
udp_from() {
    ns_exec "$1" "$PYTHON3" -c '
import socket, sys, time
sport, ip, port, timeout = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", sport))
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    s.sendto(b"x\n", (ip, port))
    s.settimeout(0.1)
    try:
        data = s.recv(100)
    except OSError:
        continue
    print(data[2:].decode())
    sys.exit(0)
sys.exit(1)' "$2" "$3" "$4" "$5"
}

@test "from outside to H:hostPort, TCP and UDP, reaches the pod, which sees the client's own address" {
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(udp 8053 53)]")"
    serve t "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 t
    assert_equal "$(server_peer t)" "$O_IP4"
    serve u "$C1" udp 53
    assert_reach "$O" udp "$H_IP4" 8053 u
    assert_equal "$(server_peer u)" "$O_IP4"
}

@test "from H to its own address:hostPort (locally generated traffic)" {
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(udp 8053 53)]")"
    serve t "$C1" tcp 80
    assert_reach "$H" tcp "$H_IP4" 8080 t
    assert_equal "$(server_peer t)" "$H_IP4"
    serve u "$C1" udp 53
    assert_reach "$H" udp "$H_IP4" 8053 u
}

@test "from H to 127.0.0.1:hostPort works (route_localnet, localhost masquerade); [::1] is not mapped" {
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80)]")"
    settle_v6 "$H"
    serve t "$C1" tcp 80
    assert_reach "$H" tcp 127.0.0.1 8080 t
    assert_equal "$(server_peer t)" "$POD_GW4"
    assert_equal "$(ns_exec "$H" sysctl -n net.ipv4.conf.cbr0.route_localnet)" 1
    serve t6 "$C1" tcp 80
    probe "$H" tcp ::1 8080 1
    assert_failure
    # while H's global v6 address works
    assert_reach "$H" tcp "$H_IP6" 8080 t6
}

@test "a mapping bound to one host address answers on it only" {
    ip -n "$H" addr add 198.51.100.10/24 dev eth-o
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80 198.51.100.10)]")"
    serve t "$C1" tcp 80
    refute_reach "$O" tcp "$H_IP4" 8080
    assert_reach "$O" tcp 198.51.100.10 8080 t
    assert_equal "$(server_peer t)" "$O_IP4"
}

@test "one hostPort, three owners: 127.0.0.1/tcp, H/tcp and H/udp each reach their own pod" {
    local C2 C3
    C2=$(netns_create C2)
    C3=$(netns_create C3)
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80 127.0.0.1)]")"
    cni 0 add "$C2" cap="$(pm "[$(tcp 8080 80 "$H_IP4")]")"
    cni 0 add "$C3" cap="$(pm "[$(udp 8080 80 "$H_IP4")]")"
    serve c1 "$C1" tcp 80
    serve c2 "$C2" tcp 80
    serve c3 "$C3" udp 80
    assert_reach "$H" tcp 127.0.0.1 8080 c1
    assert_reach "$O" tcp "$H_IP4" 8080 c2
    assert_reach "$O" udp "$H_IP4" 8080 c3
}

# hairpin SELF|NEIGHBOUR BRNF: a pod reaches C1's published port through H's address.
hairpin() {
    local from=$1 bnf=$2
    ns_exec "$H" sysctl -qw net.bridge.bridge-nf-call-iptables="$bnf" || skip "no br_netfilter here"
    ns_exec "$H" sysctl -qw net.bridge.bridge-nf-call-ip6tables="$bnf"
    serve "self$bnf" "$C1" tcp 80
    assert_reach "$from" tcp "$H_IP4" 8080 "self$bnf"
    serve "u$bnf" "$C1" udp 53
    assert_reach "$from" udp "$H_IP4" 8053 "u$bnf"
}

@test "hairpin: a pod reaches its own published port via H's address (bridge-nf-call-iptables 1 and 0)" {
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(udp 8053 53)]")"
    hairpin "$C1" 1
    hairpin "$C1" 0
}

@test "a neighbour pod reaches a published port via H's address (bridge-nf-call-iptables 1 and 0)" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(udp 8053 53)]")"
    cni 0 add "$C2"
    hairpin "$C2" 1
    hairpin "$C2" 0
}

@test "a port published on 127.0.0.1 cannot be reached by a neighbour routing 127.0.0.1 to H" {
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(udp 8053 53 127.0.0.1)]")"
    serve local "$C1" udp 53
    assert_reach "$H" udp 127.0.0.1 8053 local
    skip_reference "route_localnet plus DNAT exposes 127.0.0.1 mappings to the LAN (USERS.md 4)"
    # O becomes an attacker: its 127.0.0.1 is routed to H
    ip -n "$O" addr flush dev lo
    ns_exec "$O" sysctl -qw net.ipv4.conf.eth-h.route_localnet=1
    ip -n "$O" route add 127.0.0.1/32 via "$H_IP4" dev eth-h
    run ip -n "$O" -j route get 127.0.0.1
    assert_json '.[0].gateway' "$H_IP4" # the probe does leave O for H (the reference answers it)
    serve victim "$C1" udp 53
    refute_reach "$O" udp 127.0.0.1 8053
}

@test "several mappings in one ADD all work; DEL removes them all and nobody else's" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(tcp 8443 443), $(udp 8053 53)]")"
    cni 0 add "$C2" cap="$(pm "[$(tcp 9090 80)]")"
    serve a "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP4" 8080 a
    serve b "$C1" tcp 443
    assert_reach "$O" tcp "$H_IP4" 8443 b
    serve c "$C1" udp 53
    assert_reach "$O" udp "$H_IP4" 8053 c
    cni 0 del "$C1"
    local p
    for p in 8080 8443 8053; do
        fw_mentions_port "$p" && fail "port $p still published: $(fw_dump)"
    done
    fw_mentions_port 9090 || fail "C2's port 9090 went away with C1"
    serve d "$C2" tcp 80
    assert_reach "$O" tcp "$H_IP4" 9090 d
    serve e "$C1" tcp 80
    refute_reach "$O" tcp "$H_IP4" 8080
}

@test "UDP re-map: a client that kept sending reaches the new pod at once (stale conntrack flushed)" {
    local C2
    C2=$(netns_create C2)
    conflist "$NET"
    cni 0 add "$C1" cap="$(pm "[$(udp 8053 53)]")"
    serve old "$C1" udp 53
    run udp_from "$O" 40000 "$H_IP4" 8053 3
    assert_success
    assert_output old
    cni 0 del "$C1"
    # the client keeps sending from the same port into the void
    run udp_from "$O" 40000 "$H_IP4" 8053 0.3
    assert_failure
    cni 0 add "$C2" cap="$(pm "[$(udp 8053 53)]")"
    serve new "$C2" udp 53
    run udp_from "$O" 40000 "$H_IP4" 8053 2
    assert_success
    assert_output new
}

@test "dual stack: v6 client to H's v6 address reaches the pod's v6; a v4 hostIP mapping creates no v6 rule" {
    conflist "$NET" "$DS"
    cni 0 add "$C1" cap="$(pm "[$(tcp 8080 80), $(tcp 8081 81 "$H_IP4")]")"
    settle_v6 "$H"
    serve v6 "$C1" tcp 80
    assert_reach "$O" tcp "$H_IP6" 8080 v6
    assert_equal "$(server_peer v6)" "$O_IP6"
    serve v4 "$C1" tcp 81
    assert_reach "$O" tcp "$H_IP4" 8081 v4
    serve v6b "$C1" tcp 81
    refute_reach "$O" tcp "$H_IP6" 8081
    # no v6 DNAT for 8081, in iptables or nft terms (one rule or map element per line)
    run bash -c "{ ip netns exec '$H' ip6tables-save -t nat; ip netns exec '$H' nft list ruleset; } \
        2>/dev/null | grep -E 'dport 8081 .*DNAT|8081.*fd00:'"
    assert_output ''
}

# portmap_alone CAPS: ADD portmap by itself with a bridge result as prevResult; sets PREV.
portmap_alone() {
    local cfg
    cfg=$(jq -c --arg v "$PLUGIN_CNI_VERSION" --argjson prev "$PREV" --argjson rc "$1" \
        '.plugins[1] + {name: .name, cniVersion: $v, prevResult: $prev}
         + (if $rc == {} then {} else {runtimeConfig: $rc} end)' "$NETCONF_DIR/$NET.conflist")
    run_plugin "${2:-0}" portmap ADD "$cfg" CNI_CONTAINERID=ctr-C1 \
        "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR"
}

@test "pass-through: portmap outputs prevResult unchanged, with and without mappings" {
    conflist "$NET" "$DS"
    conflist bronly "$DS | $NOPORTMAP"
    cni 0 add "$C1" net=bronly id=ctr-C1
    PREV=$output
    local before after
    before=$(fw_state)
    portmap_alone '{}'
    assert_equal "$(jq -S . <<<"$output")" "$(jq -S . <<<"$PREV")"
    after=$(fw_state)
    portmap_alone "$(pm "[$(tcp 8080 80)]")"
    assert_equal "$(jq -S . <<<"$output")" "$(jq -S . <<<"$PREV")"
    fw_mentions_port 8080 || fail "no rule for 8080"
    # without mappings the firewall is not touched at all
    assert_equal "$after" "$before"
}

@test "bad mappings are refused with an error object and install nothing" {
    conflist "$NET"
    conflist bronly "$NOPORTMAP"
    cni 0 add "$C1" net=bronly id=ctr-C1
    PREV=$output
    portmap_alone "$(pm '[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]')" '!'
    run fw_addresses
    assert_output 10.99.0.2 # the bridge's masquerade only
    skip_reference "1.1.1 accepts an invalid hostIP, and leaves ports above 65535 and unknown protocols to iptables"
    portmap_alone "$(pm '[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"not-an-ip"}]')" '!'
    portmap_alone "$(pm '[{"hostPort":70000,"containerPort":80,"protocol":"tcp"}]')" '!'
    portmap_alone "$(pm '[{"hostPort":8080,"containerPort":80,"protocol":"foo"}]')" '!'
    portmap_alone "$(pm '[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"::1"}]')" '!'
    run fw_addresses
    assert_output 10.99.0.2
    fw_mentions_port 8080 && fail "something was installed for 8080: $(fw_dump)"
    true
}
