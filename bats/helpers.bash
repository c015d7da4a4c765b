# Shared helpers for the bats conformance suite.
#
# Every plugin call runs inside a network namespace H created by the test (`ip netns exec H`),
# never in the machine's own namespace. Namespaces carry a unique prefix
#   cnibats-<bats root pid>-<suite test number>-<role>
# and teardown removes everything with the test's prefix (veths first, then namespaces).
#
# Environment:
#   PLUGIN_DIR      directory holding bridge, host-local, portmap, loopback (default:
#                   <repo>/dist/cni);
#                   PLUGIN_DIR=/usr/lib/cni runs the same suite against the reference plugins.
#   LIBCNI_CLIENT   libcni-based runtime (default: <repo>/dist/tools/libcni-client).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGIN_DIR="$(realpath -m "${PLUGIN_DIR:-$REPO_ROOT/dist/cni}")"
LIBCNI_CLIENT="${LIBCNI_CLIENT:-$REPO_ROOT/dist/tools/libcni-client}"
PLUGINS=(bridge host-local portmap)
PLUGIN_PATH_ENV="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLUGIN_TIMEOUT="${PLUGIN_TIMEOUT:-20}"

# Set by setup_suite (from the plugins' own VERSION answer); defaults for running one file alone.
: "${PLUGIN_IS_REFERENCE:=0}"
: "${PLUGIN_CNI_VERSION:=1.1.0}"

CNIBATS_PREFIX="cnibats-${BATS_ROOT_PID:-$$}"

# ---------------------------------------------------------------------------------------------
# namespaces

test_prefix() { echo "${CNIBATS_PREFIX}-${BATS_SUITE_TEST_NUMBER:-0}"; }

netns_path() { echo "/run/netns/$1"; }

# netns_create ROLE -> creates <test prefix>-ROLE with lo up; prints the name
netns_create() {
    local name
    name="$(test_prefix)-$1"
    ip netns add "$name" || return 1
    ip -n "$name" link set lo up || return 1
    echo "$name"
}

# Delete every namespace whose name starts with PREFIX: veths first (moby's EEXIST note), then
# the namespaces. Only our own prefix is ever touched.
netns_remove_prefix() {
    local prefix=$1 ns link
    [[ $prefix == cnibats-* ]] || { echo "refusing to sweep prefix '$prefix'" >&2; return 1; }
    for ns in $(ip netns list | awk '{print $1}'); do
        [[ $ns == "$prefix"-* ]] || continue
        for link in $(ip -n "$ns" -o link show type veth 2>/dev/null | awk -F'[:@]' '{print $2}'); do
            ip -n "$ns" link del "$link" 2>/dev/null || true
        done
    done
    for ns in $(ip netns list | awk '{print $1}'); do
        [[ $ns == "$prefix"-* ]] || continue
        remove_state_dir "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
}

# remove_state_dir NS: the plugins' records and markers of a namespace about to be deleted (a
# runtime under test may have called them without our CNI_BRIDGE_STATE_DIR). NS is alive, so
# no other live namespace has its inode: the directory is its own or a dead one's.
remove_state_dir() {
    local inode root
    inode=$(stat -L -c %i "/run/netns/$1" 2>/dev/null) || return 0
    for root in /run/cni-bridge ${CNI_BRIDGE_STATE_DIR:+"$CNI_BRIDGE_STATE_DIR"}; do
        rm -rf "${root:?}/netns-$inode"
    done
}

# Refuse to go on if NS is the machine's own network namespace: the one of PID 1 (when it can
# be read; some containers hide it even from root) or the one this suite itself runs in.
guard_not_init_netns() {
    local target own
    target="$(stat -L -c '%d:%i' "$(netns_path "$1")" 2>/dev/null)" \
        || fail "namespace $1 does not exist"
    for own in /proc/1/ns/net /proc/$$/ns/net; do
        if [[ $target == "$(stat -L -c '%d:%i' "$own" 2>/dev/null)" ]]; then
            fail "refusing to run a plugin in the machine's own network namespace ($1 = $own)"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# per-test setup / teardown

require_root() {
    if [[ $EUID -ne 0 ]]; then
        [[ ${CI:-} == true ]] && fail "the bats suite needs root"
        skip "needs root"
    fi
}

# Create H (where plugins run) and C1 (the container namespace), a data dir for host-local,
# and the defaults used by run_plugin.
common_setup() {
    require_root
    H="$(netns_create H)" || fail "cannot create namespace H"
    C1="$(netns_create C1)" || fail "cannot create namespace C1"
    DATA_DIR="$BATS_TEST_TMPDIR/ipam"
    CONTAINER_ID="ctr-${BATS_SUITE_TEST_NUMBER:-0}"
    STDIN_SEQ=0
    CNI_BRIDGE_STATE_DIR="$BATS_TEST_TMPDIR/state"
    export H C1 DATA_DIR CONTAINER_ID CNI_BRIDGE_STATE_DIR
}

common_teardown() {
    if [[ -z ${BATS_TEST_COMPLETED:-} && -z ${BATS_TEST_SKIPPED:-} ]]; then
        dump_state
    fi
    netns_remove_prefix "$(test_prefix)"
}

# Print H's state (shown by bats only when the test failed).
dump_state() {
    local ns=${1:-${H:-}}
    [[ -n $ns ]] && ip netns list | grep -q "^$ns\b" || return 0
    {
        echo "#### state of $ns"
        echo "## ip -d addr";        ip -n "$ns" -d addr
        echo "## ip route";          ip -n "$ns" route show table all
        echo "## ip -6 route";       ip -n "$ns" -6 route show table all
        echo "## iptables-save";     ip netns exec "$ns" iptables-save 2>&1
        echo "## ip6tables-save";    ip netns exec "$ns" ip6tables-save 2>&1
        echo "## nft list ruleset";  ip netns exec "$ns" nft list ruleset 2>&1
        if [[ -n ${DATA_DIR:-} && -d ${DATA_DIR} ]]; then
            echo "## data dir $DATA_DIR"
            find "$DATA_DIR" -type f -printf '%P: ' -exec cat {} \; -exec echo \;
        fi
    } >&2
}

# ---------------------------------------------------------------------------------------------
# configs

# make_config PLUGIN [JQ_FILTER] -> a valid single-plugin config for PLUGIN (host-local data
# under the test's tmp dir), optionally transformed by JQ_FILTER.
make_config() {
    local plugin=$1 filter=${2:-.} base
    case $plugin in
        bridge | host-local)
            base='{"cniVersion":"'$PLUGIN_CNI_VERSION'","name":"testnet","type":"'$plugin'",'
            base+='"bridge":"cbr0","isGateway":true,"ipam":{"type":"host-local",'
            base+='"dataDir":"'$DATA_DIR'","ranges":[[{"subnet":"10.99.0.0/24"}]]}}'
            ;;
        portmap)
            base='{"cniVersion":"'$PLUGIN_CNI_VERSION'","name":"testnet","type":"portmap",'
            base+='"capabilities":{"portMappings":true}}'
            ;;
        *) fail "make_config: unknown plugin $plugin" ;;
    esac
    if [[ $filter == . ]]; then echo "$base"; else jq -c "$filter" <<<"$base"; fi
}

# ---------------------------------------------------------------------------------------------
# running a plugin

# run_plugin EXPECTED_STATUS PLUGIN COMMAND CONFIG [VAR=VALUE | -VAR ...]
#   EXPECTED_STATUS  0, N, '!' (any non-zero) or '?' (anything)
#   COMMAND          CNI_COMMAND value; '-' leaves CNI_COMMAND unset
#   CONFIG           stdin text ('' = empty stdin); '@FILE' reads FILE
#   VAR=VALUE        overrides/sets an environment variable; -VAR removes it
# Defaults: CNI_CONTAINERID=$CONTAINER_ID CNI_NETNS=/run/netns/$C1 CNI_IFNAME=eth0
# CNI_PATH=$PLUGIN_DIR. Runs `ip netns exec $H timeout ... env -i PATH=... CNI_...=... plugin`
# with `run --separate-stderr`, then enforces the output contract and the expected status.
run_plugin() {
    local expected=$1 plugin=$2 command=$3 config=$4 kv stdin_file
    shift 4
    local -A env=(
        [CNI_COMMAND]=$command
        [CNI_CONTAINERID]=$CONTAINER_ID
        [CNI_NETNS]=$(netns_path "$C1")
        [CNI_IFNAME]=eth0
        [CNI_PATH]=$PLUGIN_DIR
    )
    [[ $command == - ]] && unset 'env[CNI_COMMAND]'
    # Records stay in the test's temp dir, never under the machine's /run.
    [[ -n ${CNI_BRIDGE_STATE_DIR:-} ]] && env[CNI_BRIDGE_STATE_DIR]=$CNI_BRIDGE_STATE_DIR
    # A private resident server (cni-bridge serve), when the run sets one.
    [[ -v CNI_BRIDGE_SOCKET ]] && env[CNI_BRIDGE_SOCKET]=$CNI_BRIDGE_SOCKET
    for kv in "$@"; do
        case $kv in
            -*) unset "env[${kv#-}]" ;;
            *=*) env[${kv%%=*}]=${kv#*=} ;;
            *) fail "run_plugin: bad argument '$kv'" ;;
        esac
    done
    local -a envargs=("PATH=$PLUGIN_PATH_ENV")
    for kv in "${!env[@]}"; do envargs+=("$kv=${env[$kv]}"); done

    STDIN_SEQ=$((${STDIN_SEQ:-0} + 1))
    stdin_file="$BATS_TEST_TMPDIR/stdin.$STDIN_SEQ"
    if [[ $config == @* ]]; then
        cp "${config#@}" "$stdin_file"
    else
        printf '%s' "$config" >"$stdin_file"
    fi

    [[ -x $PLUGIN_DIR/$plugin ]] || fail "no executable $PLUGIN_DIR/$plugin"
    guard_not_init_netns "$H"

    echo "# run_plugin: $plugin ${envargs[*]} <$(head -c 400 "$stdin_file")" >&2
    run --separate-stderr ip netns exec "$H" timeout -k 5 "$PLUGIN_TIMEOUT" \
        env -i "${envargs[@]}" "$PLUGIN_DIR/$plugin" <"$stdin_file"
    echo "# status: $status" >&2
    echo "# stdout: $output" >&2
    echo "# stderr: $stderr" >&2

    check_output_contract "$plugin"
    case $expected in
        '?') ;;
        '!') ((status != 0)) || fail "$plugin: expected a non-zero exit status, got 0" ;;
        *) ((status == expected)) || fail "$plugin: expected exit status $expected, got $status" ;;
    esac
}

# exit 0 => stdout empty or exactly one JSON document;
# non-zero => stdout exactly one JSON object with an integer `code` and a string `msg`.
check_output_contract() {
    local plugin=$1
    if ((status == 124 || status == 137)); then
        fail "$plugin: timed out after ${PLUGIN_TIMEOUT}s"
    fi
    if ((status == 0)); then
        [[ -z $output ]] && return 0
        jq -se 'length == 1' <<<"$output" >/dev/null 2>&1 \
            || fail "$plugin: exit 0 but stdout is not exactly one JSON document: $output"
    else
        jq -se 'length == 1 and (.[0] | type == "object")
                and (.[0].code | type == "number" and . == floor)
                and (.[0].msg | type == "string")' <<<"$output" >/dev/null 2>&1 \
            || fail "$plugin: exit $status but stdout is not one error object {code:int, msg:string}: $output"
    fi
}

# assert_json QUERY EXPECTED: jq -r QUERY on $output (or on $3 if given) equals EXPECTED.
assert_json() {
    local query=$1 expected=$2 input=${3-$output} actual
    actual=$(jq -r "$query" <<<"$input") || fail "assert_json: jq failed on '$query' for: $input"
    assert_equal "$actual" "$expected"
}

# assert_error CODE [MSG]: last run_plugin returned error CODE (and message MSG, if given).
assert_error() {
    ((status != 0)) || fail "expected an error, got exit 0 and: $output"
    if (($# > 1)); then
        assert_json '"\(.code) \(.msg)"' "$1 $2"
    else
        assert_json .code "$1"
    fi
}

# H holds nothing but lo, and host-local reserved no address.
assert_h_pristine() {
    local links files
    links=$(ip -n "$H" -o link show | awk -F': ' '{printf "%s%s", sep, $2; sep=","}')
    assert_equal "$links" "lo"
    if [[ -d $DATA_DIR ]]; then
        files=$(find "$DATA_DIR" -type f ! -name lock ! -name 'last_reserved_ip.*' | wc -l)
        assert_equal "$files" 0
    fi
}

skip_if_reference() {
    if [[ $PLUGIN_IS_REFERENCE == 1 ]]; then skip "reference plugins: $*"; fi
}

# ---------------------------------------------------------------------------------------------
# libcni runtime

# run_client EXPECTED_STATUS add|check|del NETNAME NETNS [VAR=VALUE...]
# Runs the libcni client inside H with conflists from $BATS_TEST_TMPDIR/netconf and the result
# cache in $BATS_TEST_TMPDIR/cache.
run_client() {
    local expected=$1 verb=$2 net=$3 ns=$4
    shift 4
    [[ -x $LIBCNI_CLIENT ]] || fail "libcni client not built: $LIBCNI_CLIENT (run tests/setup.sh)"
    guard_not_init_netns "$H"
    mkdir -p "$BATS_TEST_TMPDIR/netconf" "$BATS_TEST_TMPDIR/cache"
    run --separate-stderr ip netns exec "$H" timeout -k 5 60 env -i "PATH=$PLUGIN_PATH_ENV" \
        "NETCONFPATH=$BATS_TEST_TMPDIR/netconf" "CNI_PATH=$PLUGIN_DIR" \
        "CNI_CACHE_DIR=$BATS_TEST_TMPDIR/cache" "CNI_CONTAINERID=$CONTAINER_ID" "$@" \
        "$LIBCNI_CLIENT" "$verb" "$net" "$([[ $ns == /* ]] && echo "$ns" || netns_path "$ns")"
    echo "# client $verb $net: status $status" >&2
    echo "# stdout: $output" >&2
    echo "# stderr: $stderr" >&2
    case $expected in
        '?') ;;
        '!') ((status != 0)) || fail "client $verb: expected failure" ;;
        *) ((status == expected)) || fail "client $verb: expected $expected, got $status" ;;
    esac
}

# =============================================================================================
# Behaviour suites (bats/20-*.bats ... 90-*.bats): a small world per test.
#
#   H   the "node": plugins run here; eth-o 198.51.100.1/24, 2001:db8:ff::1/64, default routes
#       via O.
#   O   "outside": eth-h 198.51.100.2/24, 2001:db8:ff::2/64, no default route at all, so no
#       packet can leave the test's namespaces. Masqueraded pod traffic ends here.
#   C1, C2, ...  containers (netns_create).
# Pod networks: 10.99.0.0/24 and fd00:99::/64 (routed only inside H).
#
# The plugins keep their records under $CNI_BRIDGE_STATE_DIR (a temp dir), host-local its
# reservations under $DATA_DIR, runtimes their result cache under $CACHE_DIR: nothing outside
# $BATS_TEST_TMPDIR is written.

RUNNER="$REPO_ROOT/tests/conflist_runner.py"
ECHO_TOOL="$REPO_ROOT/tests/connectivity.py"
REFERENCE_DIR="${REFERENCE_DIR:-/usr/lib/cni}"
# Debian's interpreter when present: version-manager shims (pyenv) cost ~200 ms per start.
PYTHON3="$( [[ -x /usr/bin/python3 ]] && echo /usr/bin/python3 || command -v python3)"
H_IP4=198.51.100.1 O_IP4=198.51.100.2
H_IP6=2001:db8:ff::1 O_IP6=2001:db8:ff::2
POD_NET4=10.99.0.0/24 POD_NET6=fd00:99::/64
POD_GW4=10.99.0.1 POD_GW6=fd00:99::1

is_reference() { [[ ${PLUGIN_IS_REFERENCE:-0} == 1 ]]; }

# skip_reference WHY: skip the rest of this test when PLUGIN_DIR holds the reference plugins.
skip_reference() {
    if is_reference; then skip "reference: $*"; fi
}

# world_setup: H, C1 (common_setup), O and the H<->O link; the runtime's dirs.
world_setup() {
    common_setup
    O="$(netns_create O)" || fail "cannot create namespace O"
    export O
    export CNI_BRIDGE_STATE_DIR="$BATS_TEST_TMPDIR/state"
    CACHE_DIR="$BATS_TEST_TMPDIR/cache"
    NETCONF_DIR="$BATS_TEST_TMPDIR/netconf"
    mkdir -p "$NETCONF_DIR" "$CACHE_DIR"
    NET=testnet
    RUNTIME=${RUNTIME:-runner}
    declare -gA CAPS=() SERVER_PIDS=()
    ip -n "$H" link add eth-o type veth peer name eth-h netns "$O" || fail "cannot link H and O"
    ip -n "$H" addr add "$H_IP4/24" dev eth-o
    ip -n "$H" addr add "$H_IP6/64" dev eth-o nodad
    ip -n "$O" addr add "$O_IP4/24" dev eth-h
    ip -n "$O" addr add "$O_IP6/64" dev eth-h nodad
    # the test's own link needs no DAD: its link-local addresses are usable at once
    ip netns exec "$H" sysctl -qw net.ipv6.conf.eth-o.accept_dad=0
    ip netns exec "$O" sysctl -qw net.ipv6.conf.eth-h.accept_dad=0
    ip -n "$H" link set eth-o up
    ip -n "$O" link set eth-h up
    ip -n "$H" route add default via "$O_IP4"
    ip -n "$H" -6 route add default via "$O_IP6"
}

world_teardown() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    common_teardown
}

# ns_exec NS CMD...: run CMD in namespace NS (ip netns exec remounts /sys for NS).
ns_exec() {
    local ns=$1
    shift
    [[ $ns == "$(test_prefix)"-* ]] || fail "ns_exec: $ns is not one of this test's namespaces"
    ip netns exec "$ns" "$@"
}

# ---------------------------------------------------------------------------------------------
# configuration

# conflist [NAME [JQ_FILTER [VERSION]]]: writes $NETCONF_DIR/NAME.conflist (default $NET) and
# prints its path. The base list is bridge (cbr0, gateway, default gateway, ipMasq, hairpin,
# host-local 10.99.0.0/24 in $DATA_DIR) + portmap (capability portMappings). VERSION defaults
# to 1.0.0 when the libcni client is the runtime (Debian's libcni knows no 1.1.0 results),
# else to the plugins' highest version. Filter helpers: see DS, V6ONLY.
conflist() {
    local name=${1:-$NET} filter=${2:-.} version=${3:-}
    if [[ -z $version ]]; then
        [[ $RUNTIME == libcni ]] && version=1.0.0 || version=$PLUGIN_CNI_VERSION
    fi
    jq -n --arg name "$name" --arg v "$version" --arg dd "$DATA_DIR" "
        {cniVersion: \$v, name: \$name, plugins: [
          {type: \"bridge\", bridge: \"cbr0\", isGateway: true, isDefaultGateway: true,
           ipMasq: true, hairpinMode: true,
           ipam: {type: \"host-local\", dataDir: \$dd, ranges: [[{subnet: \"$POD_NET4\"}]]}},
          {type: \"portmap\", capabilities: {portMappings: true}, snat: true}]}
        | $filter" >"$NETCONF_DIR/$name.conflist" || fail "conflist: bad filter $filter"
    echo "$NETCONF_DIR/$name.conflist"
}

# jq filters for conflist
DS='.plugins[0].ipam.ranges = [[{subnet: "'$POD_NET4'"}], [{subnet: "'$POD_NET6'"}]]'
V6ONLY='.plugins[0].ipam.ranges = [[{subnet: "'$POD_NET6'"}]]'
NOPORTMAP='.plugins |= [.[0]]'

# ---------------------------------------------------------------------------------------------
# runtime: the conflist runner (tests/conflist_runner.py) or the libcni client

# cni EXPECTED VERB NS [id=ID] [if=IFNAME] [net=NAME] [cap=JSON] [args=CNI_ARGS]
#     [valid="ID/IF ..."] [path=DIR:DIR] [via=runner|libcni]
# VERB: add, check, del (both runtimes), gc, status (runner). NS: a namespace name, an absolute
# path, or '' (no CNI_NETNS). The container ID defaults to ctr-<role of NS>. Capability args
# given on add are remembered and passed again on check and del (as runtimes do).
# ADD's result is in $output.
cni() {
    local expected=$1 verb=$2 ns=$3 kv
    shift 3
    local id="" ifname=eth0 net=$NET cap="" args="" valid="" path=$PLUGIN_DIR via=$RUNTIME
    local has_valid=0
    for kv in "$@"; do
        case $kv in
            id=*) id=${kv#id=} ;;
            if=*) ifname=${kv#if=} ;;
            net=*) net=${kv#net=} ;;
            cap=*) cap=${kv#cap=} ;;
            args=*) args=${kv#args=} ;;
            valid=*) valid=${kv#valid=}; has_valid=1 ;;
            path=*) path=${kv#path=} ;;
            via=*) via=${kv#via=} ;;
            *) fail "cni: bad argument '$kv'" ;;
        esac
    done
    [[ -n $id ]] || id="ctr-${ns##*-}"
    local nspath=$ns
    [[ -n $ns && $ns != /* ]] && nspath=$(netns_path "$ns")
    local key="$net/$id/$ifname"
    if [[ $verb == add && -n $cap ]]; then CAPS[$key]=$cap; fi
    [[ -z $cap ]] && cap=${CAPS[$key]:-}
    guard_not_init_netns "$H"

    if [[ $via == libcni ]]; then
        [[ $verb == add || $verb == check || $verb == del ]] || fail "cni: libcni client has no $verb"
        [[ -x $LIBCNI_CLIENT ]] || fail "libcni client not built: $LIBCNI_CLIENT (tests/setup.sh)"
        run --separate-stderr ip netns exec "$H" timeout -k 5 60 env -i "PATH=$PLUGIN_PATH_ENV" \
            "NETCONFPATH=$NETCONF_DIR" "CNI_PATH=$path" "CNI_CACHE_DIR=$CACHE_DIR" \
            "CNI_CONTAINERID=$id" "CNI_IFNAME=$ifname" "CAP_ARGS=$cap" "CNI_ARGS=$args" \
            "CNI_BRIDGE_STATE_DIR=$CNI_BRIDGE_STATE_DIR" \
            ${CNI_BRIDGE_SOCKET+"CNI_BRIDGE_SOCKET=$CNI_BRIDGE_SOCKET"} \
            "$LIBCNI_CLIENT" "$verb" "$net" "${nspath:-}"
    else
        local -a argv=("$PYTHON3" "$RUNNER" "$verb" --conflist "$NETCONF_DIR/$net.conflist"
            --cache "$CACHE_DIR" --plugin-dir "$path" --host-ns "$H" --id "$id"
            --ifname "$ifname" --netns "$nspath" --cap "${cap:-{\}}" --args "$args")
        if ((has_valid)); then
            # shellcheck disable=SC2206
            local -a v=($valid)
            argv+=(--valid "${v[@]}")
        fi
        run --separate-stderr timeout -k 5 90 "${argv[@]}"
    fi
    {
        echo "# cni $verb ($via) net=$net id=$id if=$ifname netns=$nspath cap=$cap args=$args: status $status"
        echo "# stdout: $output"
        echo "# stderr: $stderr"
    } >&2
    case $expected in
        '?') ;;
        '!') ((status != 0)) || fail "cni $verb $id: expected a failure, got exit 0" ;;
        *) ((status == expected)) || fail "cni $verb $id ($via): expected exit $expected, got $status: $output $stderr" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# reading state

# pod_ip NS [4|6] [IFNAME]: the container's global address of that family (no prefix).
pod_ip() {
    local ns=$1 fam=${2:-4} ifname=${3:-eth0}
    ip -n "$ns" -j -"$fam" addr show dev "$ifname" scope global 2>/dev/null \
        | jq -r '[.[].addr_info[] | .local // empty] | first // empty'
}

# link_json NS IFNAME: `ip -j -d link show` of one link (the object, not the array).
link_json() { ip -n "$1" -j -d link show dev "$2" | jq '.[0]'; }

# host_veths: names of H's veths enslaved to a bridge.
host_veths() {
    ip -n "$H" -j -d link show type veth \
        | jq -r '.[] | select(.linkinfo.info_slave_kind == "bridge") | .ifname'
}

# reservations: host-local's reservation files for network NAME (default $NET), "IP id/if".
reservations() {
    local dir="$DATA_DIR/${1:-$NET}" f
    [[ -d $dir ]] || return 0
    for f in "$dir"/*; do
        [[ -f $f ]] || continue
        case ${f##*/} in lock | last_reserved_ip.*) continue ;; esac
        printf '%s %s\n' "${f##*/}" "$(tr '\r\n' '/ ' <"$f" | sed 's|/ |/|')"
    done
}

# fw_dump: every firewall rule in H, whatever wrote it (native nft, iptables-nft, legacy).
fw_dump() {
    {
        ip netns exec "$H" nft list ruleset
        ip netns exec "$H" iptables-save
        ip netns exec "$H" ip6tables-save
    } 2>/dev/null
}

# fw_addresses: pod host addresses (10.99.x.y/32 or bare, fd00:99..::x/128 or bare) that some
# firewall rule or map element mentions; subnets (shared per-network chains) are not listed.
fw_addresses() {
    fw_dump | grep -oE '(10\.9[0-9]\.[0-9]+\.[0-9]+|fd00:9[0-9]:[0-9a-f:]*)(/[0-9]+)?' \
        | grep -vE '/([0-9]|[12][0-9]|3[01]|[4-9][0-9]|1[01][0-9]|12[0-7])$' \
        | sed 's|/.*||' | sort -u
}

# fw_mentions_port PORT: a DNAT rule or map element for host port PORT exists in H.
fw_mentions_port() {
    fw_dump | grep -qE "(dport|dports|\.) ([0-9]+,)*$1([, ]|$)|--dports? ([0-9]+,)*$1\b"
}

# records: our plugins' attachment records (empty for the reference plugins).
records() {
    [[ -d ${CNI_BRIDGE_STATE_DIR:-/nonexistent} ]] || return 0
    find "$CNI_BRIDGE_STATE_DIR" -name '*.json' -printf '%P\n' | sort
}

# assert_clean [NET...]: H is back at baseline after the last DEL: no veth but eth-o, no
# reservation, no record, no firewall rule naming a pod address. Documented leftovers: the
# bridge with its gateway address, shared chains/tables, per-subnet chains, sysctls.
assert_clean() {
    local nets=("${@:-$NET}") n
    run host_veths
    assert_output ''
    for n in "${nets[@]}"; do
        run reservations "$n"
        assert_output ''
    done
    run records
    assert_output ''
    run fw_addresses
    assert_output ''
}

# wait_until TIMEOUT_S CMD...: poll CMD every 50 ms until it succeeds; fail after TIMEOUT_S.
wait_until() {
    local timeout=$1 deadline
    shift
    deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

no_tentative() { [[ -z $(ip -n "$1" -6 addr show tentative) ]]; }

# settle_v6 NS...: bounded wait until no address in these namespaces is tentative (DAD),
# link-local ones included: while a new bridge's link-local address is tentative, the node
# sends no neighbour solicitation for traffic it forwards into the bridge (the kernel wants a
# usable link-local source), so the first routed IPv6 packets to a new pod are lost.
settle_v6() {
    local ns
    for ns in "$@"; do
        wait_until 5 no_tentative "$ns" || fail "$ns: IPv6 addresses still tentative after 5 s"
    done
}

# ---------------------------------------------------------------------------------------------
# traffic (tests/connectivity.py): one-shot echo servers and probes

# serve NAME NS PROTO PORT [REPLY] [BIND]: start a one-shot echo server in NS answering REPLY
# (default NAME); returns once it is listening. Killed by world_teardown if still running.
serve() {
    local name=$1 ns=$2 proto=$3 port=$4 reply=${5:-$1} bind=${6:-}
    local out="$BATS_TEST_TMPDIR/srv.$name"
    local -a extra=()
    [[ -n $bind ]] && extra=(--bind "$bind")
    ns_exec "$ns" "$PYTHON3" "$ECHO_TOOL" serve --proto "$proto" --port "$port" \
        --reply "$reply" --timeout 20 "${extra[@]}" >"$out" 2>"$out.err" 3>&- </dev/null &
    SERVER_PIDS[$name]=$!
    wait_until 5 grep -q '^ready' "$out" || fail "server $name did not start: $(cat "$out.err")"
}

# probe NS PROTO IP PORT [TIMEOUT]: run a probe (sets $status/$output: "local X" + reply).
probe() {
    local ns=$1 proto=$2 ip=$3 port=$4 timeout=${5:-3}
    run ns_exec "$ns" "$PYTHON3" "$ECHO_TOOL" probe --proto "$proto" --to "$ip" --port "$port" \
        --timeout "$timeout"
    echo "# probe from $ns to $proto $ip:$port: status $status: $output" >&2
}

# assert_reach NS PROTO IP PORT SERVER_NAME: a probe from NS gets SERVER_NAME's echo.
assert_reach() {
    probe "$1" "$2" "$3" "$4"
    assert_success
    assert_line --index 1 "$5"
}

# refute_reach NS PROTO IP PORT: no echo within 1 s.
refute_reach() {
    probe "$1" "$2" "$3" "$4" 1
    assert_failure
}

# server_peer NAME: the peer address the one-shot server saw (waits for it to finish).
server_peer() {
    local name=$1 pid=${SERVER_PIDS[$1]}
    wait_until 5 bash -c "! kill -0 $pid 2>/dev/null" || fail "server $name still running"
    sed -n 's/^peer //p' "$BATS_TEST_TMPDIR/srv.$name"
}

# plugin_dir_mixed: a CNI_PATH dir with our plugins under their names and the reference ones
# as ref-<name> (plus tuning, firewall). Prints its path.
plugin_dir_mixed() {
    local dir="$BATS_TEST_TMPDIR/mixed" p
    mkdir -p "$dir"
    for p in bridge host-local portmap; do
        ln -sfn "$PLUGIN_DIR/$p" "$dir/$p"
        ln -sfn "$REFERENCE_DIR/$p" "$dir/ref-$p"
    done
    for p in tuning firewall; do ln -sfn "$REFERENCE_DIR/$p" "$dir/$p"; done
    echo "$dir"
}

# spy_ipam: writes an IPAM plugin "spy" into $BATS_TEST_TMPDIR/spy that appends its
# CNI_COMMAND to the file named by ipam.spyLog and then runs $PLUGIN_DIR/host-local (through a
# symlink named host-local, so our executable takes that role). Prints the dir.
spy_ipam() {
    local dir="$BATS_TEST_TMPDIR/spy"
    mkdir -p "$dir/real"
    ln -sfn "$PLUGIN_DIR/host-local" "$dir/real/host-local"
    cat >"$dir/spy" <<'SPY'
#!/bin/bash
cfg=$(cat)
log=$(jq -r '.ipam.spyLog' <<<"$cfg")
echo "${CNI_COMMAND:-none}" >>"$log"
exec "$(dirname "$0")/real/host-local" <<<"$cfg"
SPY
    chmod +x "$dir/spy"
    echo "$dir"
}

# ---------------------------------------------------------------------------------------------
# firewall drift: remove one pod's entries behind the plugins' back, whichever backend wrote
# them (our nftables maps in inet cni_bridge, or the reference's iptables chains)

# nft_delete_elements MAP_REGEX KEY_REGEX: delete the elements of our nft maps whose key, written
# "a . b . c", matches.
nft_delete_elements() {
    local map_re=$1 key_re=$2 map key
    ns_exec "$H" nft -j list table inet cni_bridge 2>/dev/null | jq -r --arg mre "$map_re" \
        --arg kre "$key_re" '.nftables[] | .map? // empty | select(.name | test($mre))
        | .name as $m | (.elem // [])[] | .[0]
        | (if type == "object" and has("elem") then .elem.val else . end)
        | (if type == "object" and has("concat") then .concat | map(tostring) | join(" . ")
           else tostring end)
        | select(test($kre)) | "\($m)\t\(.)"' |
        while IFS=$'\t' read -r map key; do
            ns_exec "$H" nft delete element inet cni_bridge "$map" "{ $key }" || return 1
        done
}

# ipt_delete_matching REGEX: delete the nat rules (v4 and v6) whose iptables-save line matches.
ipt_delete_matching() {
    local re=$1 cmd lines
    for cmd in iptables ip6tables; do
        lines=$(ns_exec "$H" "$cmd-save" -t nat 2>/dev/null | grep -E '^-A ' | grep -E -- "$re" \
            | sed 's/^-A /-D /') || continue
        [[ -n $lines ]] || continue
        printf '*nat\n%s\nCOMMIT\n' "$lines" | ns_exec "$H" "$cmd-restore" --noflush \
            || return 1
    done
}

# fw_drop_masq IP: the masquerade entry of one pod address is gone.
fw_drop_masq() {
    nft_delete_elements '^masq_via[46]$' "^$1\$"
    ipt_delete_matching "^-A POSTROUTING -s $1/(32|128) "
}

# fw_drop_dnat PORT: the DNAT entries for host port PORT are gone.
fw_drop_dnat() {
    nft_delete_elements '^hostport_(any|ip)[46]$' "(^| )$1\$"
    ipt_delete_matching "^-A CNI-DN-[0-9a-f]+ .*--dport $1 .*-j DNAT"
}

# fw_state: fw_dump without counters and timestamps, to compare before/after.
fw_state() {
    fw_dump | grep -v '^#' | sed -E 's/counter packets [0-9]+ bytes [0-9]+//; s/\[[0-9]+:[0-9]+\]//'
}

# fw_duplicate_rules: rules present twice in one chain (counters ignored), whoever wrote them
# (iptables-nft rules are nf_tables rules too); one JSON line per duplicated rule.
fw_duplicate_rules() {
    ns_exec "$H" nft -j list ruleset | jq -c '[.nftables[] | .rule? // empty
        | {family, table, chain, comment, expr: (.expr | map(select(has("counter") | not)))}]
        | group_by(.) | map(select(length > 1) | .[0]) | .[]'
}
