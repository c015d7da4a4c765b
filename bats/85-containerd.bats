#!/usr/bin/env bats
# A real runtime: Debian's containerd 1.6 drives the plugins in PLUGIN_DIR for a node network
# written by `cni-bridge install --subnet 10.99.0.0/24 --cni-version 1.0.0` (containerd 1.6's
# libcni reads up to 1.0.0), with host-local's data dir moved under the test's tmp dir.
# containerd runs inside H, in a private mount namespace (bats/containerd/run.sh) with its own
# root, state and socket in the test's tmp dir, cgroup2 mounted, runc with cgroupfs, and a
# busybox-static root filesystem (as a directory for ctr, as a locally built OCI image for CRI).
# The bin dir holds our installed bundle alone. The CRI plugin brings up each pod's lo through a
# CNI plugin named `loopback` (ours, from the bundle; a variant swaps in the reference's, as on a
# node that kept it); `ctr run --cni` calls none. PLUGIN_DIR=/usr/lib/cni runs the reference's
# four plugins. The plugins' call log (CNI_BRIDGE_LOG) tells whose loopback ran.

load helpers

setup() {
    command -v containerd >/dev/null && command -v ctr >/dev/null \
        || skip "containerd not installed (apt-get install containerd)"
    command -v runc >/dev/null || skip "runc not installed"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed"
    [[ -d /etc/cni/net.d ]] || skip "no /etc/cni/net.d to bind-mount over (podman's package has it)"
    world_setup
    W="$BATS_TEST_TMPDIR/containerd"
    mkdir -p "$W/rootfs/bin" "$W/rootfs/www" "$W/rootfs/etc" "$W/rootfs/proc" \
        "$W/rootfs/sys" "$W/rootfs/dev" "$W/rootfs/tmp"
    cp /bin/busybox "$W/rootfs/bin/busybox"
    local tool
    for tool in sh httpd wget nc sleep cat; do ln -s busybox "$W/rootfs/bin/$tool"; done
    echo "hello from the pod" >"$W/rootfs/www/index.html"

    # the node's network, written by our install (with its bundle in installed/)
    guard_not_init_netns "$H"
    ip netns exec "$H" "$REPO_ROOT/dist/cni/cni-bridge" install --bin-dir "$W/installed" \
        --conf-dir "$W/net.d" --subnet "$POD_NET4" --cni-version 1.0.0 >&2 \
        || fail "cni-bridge install --subnet failed"
    local conf="$W/net.d/10-cni-bridge.conflist"
    jq --arg dd "$DATA_DIR" '.plugins[0].ipam.dataDir = $dd' "$conf" >"$conf.new" \
        && mv "$conf.new" "$conf"
    # the plugins containerd runs: the installed bundle alone, or the reference's
    if is_reference; then
        mkdir -p "$W/bin"
        for tool in bridge host-local portmap loopback; do
            ln -s "$PLUGIN_DIR/$tool" "$W/bin/$tool"
        done
    else
        ln -s installed "$W/bin"
    fi
    export CNI_BRIDGE_LOG="$BATS_TEST_TMPDIR/calls.jsonl"
    write_containerd_configs
}

# with_reference_loopback: our installed bridge, host-local and portmap beside the reference's
# loopback, as on a node that kept it from an earlier setup.
with_reference_loopback() {
    skip_reference "the reference's own loopback is the plain scenario"
    [[ -x $REFERENCE_DIR/loopback ]] || skip "no reference loopback in $REFERENCE_DIR"
    rm "$W/bin" && mkdir "$W/bin"
    local tool
    for tool in bridge host-local portmap; do ln -s "$W/installed/$tool" "$W/bin/$tool"; done
    ln -s "$REFERENCE_DIR/loopback" "$W/bin/loopback"
    LOOPBACK=reference
}

# assert_loopback_calls: our loopback's ADD and DEL ran and succeeded, unless the scenario runs
# the reference's (then the call log has no loopback call at all). (CRI only: see ctr_scenario.)
assert_loopback_calls() {
    local calls="$BATS_TEST_TMPDIR/calls.jsonl"
    if is_reference || [[ ${LOOPBACK:-ours} == reference ]]; then
        [[ ! -s $calls ]] || refute grep -q '"role": *"loopback"' "$calls"
        return
    fi
    run jq -r 'select(.role == "loopback") | "\(.verb) \(.outcome)"' "$calls"
    assert_line 'ADD ok'
    assert_line 'DEL ok'
    refute_output --partial error
}

teardown() {
    # anything containerd left running in H (its shims), by PID
    local pid
    for pid in $(ip netns pids "$H" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    world_teardown
}

write_containerd_configs() {
    local base
    base=$(printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n' \
        "$W" "$W" "$W/containerd.sock" "$W/containerd.sock")
    printf '%s\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' "$base" >"$W/ctr.toml"
    cat >"$W/cri.toml" <<EOF
$base
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "cni-bridge.test/web:1"
  disable_cgroup = true          # cgroup2 here has no cpu controller for sandbox CPU shares
  restrict_oom_score_adj = true  # no CAP_SYS_RESOURCE to lower the OOM score
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$W/bin"
    conf_dir = "$W/net.d"
EOF
}

# run_containerd MODE: bats/containerd/run.sh in H's private mount namespace; shows its report
# and the step timings, and skips when containerd cannot run here.
run_containerd() {
    guard_not_init_netns "$H"
    run --separate-stderr timeout -k 5 120 ip netns exec "$H" \
        unshare -m --propagation private bash "$REPO_ROOT/bats/containerd/run.sh" \
        "$W" "$1" "$(netns_path "$O")" "$H_IP4" "$O_IP4"
    echo "# containerd $1: status $status" >&2
    echo "$output" | sed 's/^/# /' >&2
    echo "$stderr" | tail -20 | sed 's/^/# stderr: /' >&2
    grep '^elapsed: ' <<<"$output" | sed "s/^elapsed: /# containerd $1 elapsed (ms): /" >&3
    assert_success
    if [[ ${lines[0]} == skip:* ]]; then skip "${lines[0]#skip: }"; fi
}

ctr_scenario() {
    serve outside "$O" tcp 7101 outside
    run_containerd ctr
    local name
    for name in c1 c2; do
        assert_line --regexp "^$name-addr: 10\.99\.0\.[0-9]+/24$"
        assert_line "$name-route: default via $POD_GW4 dev eth0 "
    done
    assert_line --regexp '^links-during: .*br0 .*veth.*veth'
    assert_line 'c2-to-c1: hello from the pod'
    assert_line 'c1-to-outside: from-c1 outside'
    assert_equal "$(server_peer outside)" "$H_IP4"
    assert_line --regexp '^c1-rm: 0 $'
    assert_line --regexp '^c2-rm: 0 $'
    refute_output --partial 'network review'  # ctr's log line when CNI DEL failed
    refute_line --regexp '^links-after: .*veth'
    assert_line --regexp '^c1-lo: <LOOPBACK,UP,LOWER_UP>'
    assert_line --regexp '^c2-lo: <LOOPBACK,UP,LOWER_UP>'
    # ctr calls no loopback plugin: runc brings lo up in the namespace it creates for the task
    [[ ! -e $BATS_TEST_TMPDIR/calls.jsonl ]] || refute grep -q '"role": *"loopback"' \
        "$BATS_TEST_TMPDIR/calls.jsonl"

    run reservations cni-bridge
    assert_output ''
    skip_reference "bridge 1.1.1 returns before removing its masquerade rules when DEL has no CNI_NETNS, which is how ctr run removes the network once its task has ended"
    assert_clean cni-bridge
}

@test "containerd (ctr run --cni), our bundle alone in the bin dir: containers get an address and a default route and lo up, reach each other and (masqueraded) the outside; task kill and container rm leave nothing" {
    ctr_scenario
}

cri_scenario() {
    "$PYTHON3" -c 'import grpc' 2>/dev/null || skip "python3-grpcio not installed"
    "$PYTHON3" "$REPO_ROOT/bats/containerd/oci_image.py" "$W/rootfs" "$W/web.tar" \
        cni-bridge.test/web:1 /bin/httpd -f -p 80 -h /www
    run_containerd cri
    assert_line --regexp '^import: 0 unpacking cni-bridge\.test/web:1 .*done'
    assert_line --regexp '^cri-version: containerd 1\.6\.'
    assert_line --regexp '^run-pod-sandbox: 0 [0-9a-f]{64} $'
    assert_line --regexp '^status: SANDBOX_READY 10\.99\.0\.[0-9]+$'
    assert_line --regexp '^netns-during: cni-[0-9a-f-]+ $'
    assert_line --regexp '^lo-during: <LOOPBACK,UP,LOWER_UP>'
    assert_line 'fetch: hello from the pod'
    assert_line 'stop-pod-sandbox: 0 '
    assert_line 'status-after-stop: SANDBOX_NOTREADY -'
    assert_line 'remove-pod-sandbox: 0 '
    assert_line --regexp '^netns-after: *$'
    refute_line --regexp '^links-after: .*veth'

    assert_loopback_calls
    assert_clean cni-bridge
    fw_mentions_port 8080 && fail "port 8080 still published: $(fw_dump)"
    true
}

@test "containerd CRI, our bundle alone in the bin dir: RunPodSandbox with a hostPort gets an address and lo up and answers from outside; StopPodSandbox and RemovePodSandbox leave nothing" {
    cri_scenario
}

@test "containerd CRI with the reference's loopback beside our plugins" {
    with_reference_loopback
    cri_scenario
}
