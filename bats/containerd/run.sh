#!/bin/bash
# One containerd scenario, run as:
#   ip netns exec H unshare -m --propagation private bash run.sh WORKDIR ctr|cri O_NETNS_PATH \
#       HOST_IP OUTSIDE_IP
# containerd 1.6 runs in this private mount namespace inside H, with its own root, state and
# socket under WORKDIR, and is stopped (its tasks killed, its containers removed) on exit.
# WORKDIR holds bin/ (the CNI plugins), net.d/ (our network), rootfs/ (busybox-static) and, for
# cri, web.tar (an OCI image of that rootfs running httpd).
#
#   ctr  `ctr run --cni` two containers (httpd in c1, sleep in c2) with the network in net.d,
#        bind-mounted over /etc/cni/net.d, and bin/ over /opt/cni/bin (ctr reads only those);
#        c2 fetches c1's page, c1 reaches OUTSIDE_IP:$OUT_PORT with busybox nc; then
#        `ctr task kill` (ctr run removes the network as its task ends: DEL without CNI_NETNS)
#        and `ctr container rm`.
#   cri  the CRI plugin (bin/ and net.d/ configured directly): RunPodSandbox with hostPort
#        8080 -> 80 on an image whose entrypoint is httpd, the page fetched from the outside
#        namespace through HOST_IP:8080, then StopPodSandbox and RemovePodSandbox.
# Each step is reported on stdout as "step: ..." lines the bats test reads; "elapsed: STEP MS"
# lines time them.
set -u
W=$1 MODE=$2 ONS=$3 HOST_IP=$4 OUTSIDE_IP=$5
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON3=$( [[ -x /usr/bin/python3 ]] && echo /usr/bin/python3 || command -v python3)
OUT_PORT=${OUT_PORT:-7101}

say() { echo "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(now_ms)
elapsed() { say "elapsed: $1 $(($(now_ms) - T0))"; }

# O stays reachable through fd 9 once /run (and /run/netns) is replaced below.
exec 9<"$ONS" || { say "skip: cannot open $ONS"; exit 0; }
mount -n -t tmpfs tmpfs /run || { say "skip: cannot mount a private /run"; exit 0; }
mount -n -t tmpfs tmpfs /var/lib   # libcni's cache (/var/lib/cni) stays in here
mkdir -p /run/netns
# The machines' cgroups are a v1/v2 hybrid: cgroup2 alone here, as for podman. It has no cpu
# controller, so nothing may ask for CPU shares (ctr --cpu-shares 0, CRI disable_cgroup).
umount -n -R /sys/fs/cgroup 2>/dev/null
mount -n -t cgroup2 none /sys/fs/cgroup || { say "skip: cannot mount cgroup2"; exit 0; }

if [[ $MODE == ctr ]]; then  # ctr run --cni reads only /etc/cni/net.d and /opt/cni/bin
    mount -n --bind "$W/net.d" /etc/cni/net.d || { say "skip: cannot bind /etc/cni/net.d"; exit 0; }
    mount -n -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && mount -n --bind "$W/bin" /opt/cni/bin \
        || { say "skip: cannot bind /opt/cni/bin"; exit 0; }
fi

ctr() { command ctr --address "$W/containerd.sock" "$@" 9<&-; }
CTR_NS=default
[[ $MODE == cri ]] && CTR_NS=k8s.io

stop_containerd() {
    local id
    for id in $(ctr -n "$CTR_NS" task ls -q 2>/dev/null); do
        ctr -n "$CTR_NS" task kill -s SIGKILL "$id" >/dev/null 2>&1
        ctr -n "$CTR_NS" task delete -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr -n "$CTR_NS" container ls -q 2>/dev/null); do
        ctr -n "$CTR_NS" container rm "$id" >/dev/null 2>&1
    done
    [[ -n ${CONTAINERD_PID:-} ]] && kill "$CONTAINERD_PID" 2>/dev/null && wait "$CONTAINERD_PID"
}
trap stop_containerd EXIT

containerd --config "$W/$MODE.toml" >"$W/containerd.log" 2>&1 9<&- &
CONTAINERD_PID=$!
for _ in $(seq 200); do ctr version >/dev/null 2>&1 && break; sleep 0.05; done
ctr version >/dev/null 2>&1 || { say "skip: containerd did not start: $(tail -3 "$W/containerd.log")"; exit 0; }
elapsed containerd-up

links() { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' '; }
# lo_flags NSENTER_NET_ARG: the flags of lo in that namespace, as "<LOOPBACK,UP,LOWER_UP>"
lo_flags() { nsenter "$1" ip -o link show lo 2>/dev/null | awk '{print $3}'; }

# fetch URL from the outside namespace (through fd 9): the page, or "fetch failed: ..."
fetch_outside() {
    nsenter --net=/proc/$$/fd/9 "$PYTHON3" "$HERE/../../tests/connectivity.py" fetch "$1" 2>&1
}

run_ctr() {
    local name pid ip1 out
    # not detached: ctr run sets the network up before the task starts and removes it (CNI DEL,
    # no netns: the task is gone) once the task ends
    ctr run --cni --cpu-shares 0 --rootfs "$W/rootfs" c1 /bin/httpd -f -p 80 -h /www \
        >"$W/c1.log" 2>&1 &
    local run1=$!
    ctr run --cni --cpu-shares 0 --rootfs "$W/rootfs" c2 /bin/sleep 600 >"$W/c2.log" 2>&1 &
    local run2=$!
    for _ in $(seq 200); do
        [[ $(ctr task ls | grep -c RUNNING) == 2 ]] && break
        sleep 0.05
    done
    elapsed running
    for name in c1 c2; do
        pid=$(ctr task ls | awk -v n=$name '$1 == n {print $2}')
        say "$name-pid: $pid"
        say "$name-addr: $(nsenter --net=/proc/$pid/ns/net ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')"
        say "$name-route: $(nsenter --net=/proc/$pid/ns/net ip -4 route show default 2>/dev/null)"
        say "$name-lo: $(lo_flags --net=/proc/$pid/ns/net)"
    done
    say "links-during: $(links)"
    ip1=$(nsenter --net=/proc/"$(ctr task ls | awk '$1 == "c1" {print $2}')"/ns/net \
        ip -o -4 addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
    # busybox-static's wget resolves through glibc's NSS, which crashes in this rootfs: an
    # HTTP request through nc instead. httpd may not listen yet when its task is RUNNING.
    for attempt in $(seq 50); do
        out=$(ctr task exec --exec-id "get$attempt" c2 /bin/sh -c \
            "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 $ip1 80" 2>&1)
        [[ $out == *"200 OK"* ]] && break
        sleep 0.1
    done
    say "c2-to-c1: $(tail -1 <<<"$out")"
    out=$(ctr task exec --exec-id out c1 /bin/sh -c \
        "echo from-c1 | /bin/nc -w 5 $OUTSIDE_IP $OUT_PORT" 2>&1 | tr '\n' ' ')
    say "c1-to-outside: $out"
    elapsed traffic
    for name in c1 c2; do
        ctr task kill -s SIGKILL "$name" >/dev/null 2>&1
    done
    wait "$run1"; say "c1-run-exit: $? $(tr '\n' ' ' <"$W/c1.log")"
    wait "$run2"; say "c2-run-exit: $? $(tr '\n' ' ' <"$W/c2.log")"
    for name in c1 c2; do
        ctr container rm "$name" >"$W/rm.log" 2>&1
        say "$name-rm: $? $(tr '\n' ' ' <"$W/rm.log")"
    done
    elapsed deleted
}

run_cri() {
    local cri=("$PYTHON3" "$HERE/cri.py" "$W/containerd.sock") id status
    ctr -n k8s.io images import "$W/web.tar" >"$W/import.log" 2>&1
    say "import: $? $(tr '\n' ' ' <"$W/import.log")"
    say "cri-version: $("${cri[@]}" version 2>&1 9<&-)"
    elapsed cri-ready
    id=$("${cri[@]}" run web 8080:80 2>"$W/cri.log" 9<&-)
    say "run-pod-sandbox: $? $id $(tr '\n' ' ' <"$W/cri.log")"
    [[ -n $id ]] || return 0
    status=$("${cri[@]}" status "$id" 2>&1 9<&-)
    say "status: $status"
    say "links-during: $(links)"
    say "netns-during: $(ls /run/netns | tr '\n' ' ')"
    say "lo-during: $(lo_flags --net=/run/netns/"$(ls /run/netns | head -1)")"
    elapsed sandbox-ready
    say "fetch: $(fetch_outside "http://$HOST_IP:8080/index.html")"
    elapsed fetched
    "${cri[@]}" stop "$id" >"$W/cri.log" 2>&1 9<&-
    say "stop-pod-sandbox: $? $(tr '\n' ' ' <"$W/cri.log")"
    say "status-after-stop: $("${cri[@]}" status "$id" 2>&1 9<&-)"
    "${cri[@]}" remove "$id" >"$W/cri.log" 2>&1 9<&-
    say "remove-pod-sandbox: $? $(tr '\n' ' ' <"$W/cri.log")"
    elapsed removed
}

"run_$MODE"
say "links-after: $(links)"
say "netns-after: $(ls /run/netns | tr '\n' ' ')"
exit 0
