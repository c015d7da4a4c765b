#!/usr/bin/env bats
# A real runtime: podman 4.3 with the CNI backend (network_backend = "cni") drives the plugins
# in PLUGIN_DIR for our default network (conf/10-cni-bridge.conflist, at cniVersion 1.0.0, the
# highest podman's libcni reads, with its data dir moved under the test's tmp dir).
# podman runs inside H, in a private mount namespace with cgroup2 mounted, with runc and
# cgroupfs, its own --root/--runroot, and a busybox-static root filesystem (bats/podman/).

load helpers

setup() {
    command -v podman >/dev/null || skip "podman not installed (apt-get install podman runc busybox-static)"
    command -v runc >/dev/null || skip "runc not installed"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed"
    command -v unshare nsenter >/dev/null || skip "util-linux unshare/nsenter missing"
    world_setup
    W="$BATS_TEST_TMPDIR/podman"
    mkdir -p "$W/net.d" "$W/tmp" "$W/rootfs/bin" "$W/rootfs/www" "$W/rootfs/etc" \
        "$W/rootfs/proc" "$W/rootfs/sys" "$W/rootfs/dev" "$W/rootfs/tmp"
    cp /bin/busybox "$W/rootfs/bin/busybox"
    local tool
    for tool in sh httpd ip wget cat ls sleep; do ln -s busybox "$W/rootfs/bin/$tool"; done
    echo "hello from the pod" >"$W/rootfs/www/index.html"
    jq --arg dd "$DATA_DIR" '.cniVersion = "1.0.0" | .plugins[0].ipam.dataDir = $dd' \
        "$REPO_ROOT/conf/10-cni-bridge.conflist" >"$W/net.d/10-cni-bridge.conflist"
    cat >"$W/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
tmp_dir = "$W/tmp"
events_logger = "none"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$PLUGIN_DIR"]
network_config_dir = "$W/net.d"
EOF
}
teardown() { world_teardown; }

@test "podman (CNI backend): the container gets its address, its published port answers from outside, rm -f leaves nothing" {
    guard_not_init_netns "$H"
    run --separate-stderr timeout -k 5 120 ip netns exec "$H" \
        unshare -m --propagation private bash "$REPO_ROOT/bats/podman/run-web.sh" \
        "$W" "$(netns_path "$O")" "$H_IP4"
    echo "# podman script: status $status" >&2
    echo "$output" | sed 's/^/# /' >&2
    echo "$stderr" | tail -20 | sed 's/^/# stderr: /' >&2
    assert_success
    if [[ ${lines[0]} == skip:* ]]; then skip "${lines[0]#skip: }"; fi

    assert_line --regexp '^run: 0 [0-9a-f]{64}'
    assert_line --regexp '^ip: 172\.18\.0\.[0-9]+$'
    local ip
    ip=$(sed -n 's/^ip: //p' <<<"$output")
    assert_line "container-addrs: $ip/16"
    assert_line --regexp '^links-during: .*br0 .*veth'
    assert_line 'fetch: hello from the pod'
    assert_line --regexp '^rm: 0 '
    assert_line --regexp '^netns-after: *$'
    refute_line --regexp '^links-after: .*veth'

    # nothing left on the node: no reservation, no rule, no record
    run reservations cni-bridge
    assert_output ''
    run fw_dump
    refute_output --regexp "${ip//./\\.}([^0-9]|$)"
    fw_mentions_port 8080 && fail "port 8080 still published: $(fw_dump)"
    run records
    assert_output ''
}
