#!/bin/bash
# One podman scenario, run as:
#   ip netns exec H unshare -m --propagation private bash run-web.sh WORKDIR O_NETNS_PATH HOST_IP
# Everything podman does happens in this one private mount namespace inside H (its netns bind
# mounts are only visible here), with its own root, runroot and tmp dir under WORKDIR.
# WORKDIR holds containers.conf, net.d/ (our network) and rootfs/ (busybox-static).
#
# Steps, each reported on stdout as "step: ..." lines the bats test reads:
#   run a busybox httpd publishing 8080 -> 80 on our network, report its address and netns,
#   fetch http://HOST_IP:8080/ from the outside namespace, then `podman rm -f` it.
set -u
W=$1 ONS=$2 HOST_IP=$3
export CONTAINERS_CONF=$W/containers.conf

say() { echo "$*"; }

# Keep a handle on O (its /run/netns entry is about to be hidden), then give this mount
# namespace its own /run and /var/lib before anything else is mounted: mount(8) keeps notes in
# /run/mount, libcni its result cache in /var/lib/cni, podman its netns files in /run/netns;
# none of it is seen outside. (mount -n: no notes at all.)
exec 9<"$ONS" || { say "skip: cannot open $ONS"; exit 0; }
mount -n -t tmpfs tmpfs /run || { say "skip: cannot mount a private /run"; exit 0; }
mount -n -t tmpfs tmpfs /var/lib
mkdir -p /run/netns
# The machines' cgroups are a v1/v2 hybrid that podman cannot use: cgroup2 only, here.
umount -n -R /sys/fs/cgroup 2>/dev/null
mount -n -t cgroup2 none /sys/fs/cgroup || { say "skip: cannot mount cgroup2"; exit 0; }
# Our plugins keep their records in /run/cni-bridge unless CNI_BRIDGE_STATE_DIR says otherwise;
# podman's clean-up process (started by conmon) does not pass our environment on, so the test's
# state dir is mounted where the default points instead.
if [[ -n ${CNI_BRIDGE_STATE_DIR:-} ]]; then
    mkdir -p /run/cni-bridge "$CNI_BRIDGE_STATE_DIR"
    mount -n --bind "$CNI_BRIDGE_STATE_DIR" /run/cni-bridge
    unset CNI_BRIDGE_STATE_DIR
fi

podman=(podman --root "$W/root" --runroot "$W/runroot" --runtime runc
    --cgroup-manager cgroupfs --storage-driver vfs --events-backend none)
pm() { "${podman[@]}" "$@" 9<&-; } # O's handle is not podman's business

if ! pm info >"$W/info.log" 2>&1; then
    say "skip: podman cannot run here: $(tail -1 "$W/info.log")"
    exit 0
fi

pm run -d --name web --network cni-bridge -p 8080:80 \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --pids-limit 0 \
    --rootfs "$W/rootfs" /bin/httpd -f -p 80 -h /www >"$W/run.log" 2>&1
say "run: $? $(tr '\n' ' ' <"$W/run.log")"
pm inspect web --format '{{.NetworkSettings.Networks}}' >"$W/inspect.log" 2>&1
say "inspect: $(tr '\n' ' ' <"$W/inspect.log")"
ip=$(pm inspect web --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' 2>/dev/null)
say "ip: $ip"
ns=$(pm inspect web --format '{{.NetworkSettings.SandboxKey}}' 2>/dev/null)
say "container-addrs: $(ip netns exec "$(basename "$ns")" ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')"
say "links-during: $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' ')"

# from the outside namespace, to H's address and the published port
out=$(nsenter --net=/proc/$$/fd/9 python3 "$(dirname "${BASH_SOURCE[0]}")/../../tests/connectivity.py" \
    fetch "http://$HOST_IP:8080/index.html" 2>&1)
say "fetch: $out"

pm rm -f -t 0 web >"$W/rm.log" 2>&1
say "rm: $? $(tr '\n' ' ' <"$W/rm.log")"
say "links-after: $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' ')"
say "netns-after: $(ls /run/netns | tr '\n' ' ')"
exit 0
