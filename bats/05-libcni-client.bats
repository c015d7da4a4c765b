#!/usr/bin/env bats
# Self-test of the libcni client (bats/libcni-client) that later suites use as their runtime.
# It always drives the reference plugins in /usr/lib/cni, whatever PLUGIN_DIR says: what is
# tested here is the client (cache location, capability args, output, errors), not the plugins.

load helpers

REF_DIR=/usr/lib/cni

setup() {
    common_setup
    [[ -x $REF_DIR/bridge ]] || skip "no reference plugins in $REF_DIR"
    mkdir -p "$BATS_TEST_TMPDIR/netconf"
    cat >"$BATS_TEST_TMPDIR/netconf/10-clienttest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "clienttest",
  "plugins": [
    {"type": "bridge", "bridge": "cbr0", "isGateway": true,
     "ipam": {"type": "host-local", "dataDir": "$DATA_DIR",
              "ranges": [[{"subnet": "10.99.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$BATS_TEST_TMPDIR/netconf/20-plain.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "plain", "plugins": [
  {"type": "bridge", "bridge": "cbr1",
   "ipam": {"type": "host-local", "dataDir": "$DATA_DIR", "ranges": [[{"subnet": "10.98.0.0/24"}]]}}]}
EOF
}
teardown() { common_teardown; }

@test "client: add prints the result, caches it under CNI_CACHE_DIR, del removes it" {
    run_client 0 add plain "$C1" CNI_PATH=$REF_DIR
    assert_json '.interfaces | length' 3
    assert_json '.interfaces[2].sandbox' "$(netns_path "$C1")"
    assert_json '.ips[0].address' 10.98.0.2/24
    assert [ -f "$BATS_TEST_TMPDIR/cache/results/plain-$CONTAINER_ID-eth0" ]
    run jq -r .kind "$BATS_TEST_TMPDIR/cache/results/plain-$CONTAINER_ID-eth0"
    assert_output cniCacheV1

    run_client 0 check plain "$C1" CNI_PATH=$REF_DIR
    assert_output ''

    run_client 0 del plain "$C1" CNI_PATH=$REF_DIR
    assert_output ''
    assert [ ! -e "$BATS_TEST_TMPDIR/cache/results/plain-$CONTAINER_ID-eth0" ]
    run ip -n "$C1" -o link show eth0
    assert_failure
}

@test "client: CAP_ARGS reach portmap as runtimeConfig; CNI_IFNAME is honoured" {
    local caps='CAP_ARGS={"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
    run_client 0 add clienttest "$C1" CNI_PATH=$REF_DIR CNI_IFNAME=net1 "$caps"
    assert_json '.interfaces[2].name' net1
    run ip netns exec "$H" iptables-save -t nat
    assert_output --partial -- '--dport 8080'
    # Like a real runtime, the caller passes the same capability args again on DEL.
    run_client 0 del clienttest "$C1" CNI_PATH=$REF_DIR CNI_IFNAME=net1 "$caps"
    run ip netns exec "$H" iptables-save -t nat
    refute_output --partial -- '--dport 8080'
}

@test "client: errors go to stderr with exit 1 and nothing on stdout" {
    run_client 1 add nosuchnet "$C1" CNI_PATH=$REF_DIR
    assert_output ''
    assert_regex "$stderr" 'no net configuration with name "nosuchnet"'

    run_client 1 add plain "$C1" CNI_PATH=$REF_DIR CNI_IFNAME=a/b
    assert_output ''
    assert_regex "$stderr" 'interface name contains'

    run_client 1 add plain "$C1" CNI_CACHE_DIR=
    assert_regex "$stderr" 'CNI_CACHE_DIR is required'
}
