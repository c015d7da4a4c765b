#!/usr/bin/env bats
# Protocol surface: VERSION, environment, errors — for bridge, host-local and portmap.
# No networking: every call must fail (or answer) before the plugin touches anything, and the
# run wrapper checks the output contract after each call. Expected codes are those of the
# reference plugins (/usr/lib/cni); the suite passes against both.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

OUR_VERSIONS='["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]'
REF_VERSIONS='["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]'

expected_version_output() {
    if [[ $PLUGIN_IS_REFERENCE == 1 ]]; then
        echo "{\"cniVersion\":\"1.0.0\",\"supportedVersions\":$REF_VERSIONS}"
    else
        echo "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":$OUR_VERSIONS}"
    fi
}

# expect_error_all CODE CONFIG_FILTER [VAR=VALUE|-VAR ...]: ADD with each plugin's base config
# transformed by CONFIG_FILTER fails with CODE, and leaves H untouched.
expect_error_all() {
    local code=$1 filter=$2 p
    shift 2
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" ADD "$(make_config "$p" "$filter")" "$@"
        assert_error "$code"
        assert_h_pristine
    done
}

# --- 1. VERSION ------------------------------------------------------------------------------

@test "VERSION with a 1.1.0 config on stdin, through each name" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin 0 "$p" VERSION '{"cniVersion":"1.1.0"}'
        assert_output "$(expected_version_output)"
        assert_equal "${#lines[@]}" 1
    done
}

@test "VERSION with empty stdin and no other variables, through each name" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin 0 "$p" VERSION '' -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME -CNI_PATH
        assert_output "$(expected_version_output)"
    done
}

@test "VERSION ignores stdin that is not JSON" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin 0 "$p" VERSION 'this is not json'
        assert_output "$(expected_version_output)"
    done
}

@test "VERSION through libcni (GetVersionInfo probe)" {
    local p expected
    [[ $PLUGIN_IS_REFERENCE == 1 ]] && expected=$REF_VERSIONS || expected=$OUR_VERSIONS
    for p in "${PLUGINS[@]}"; do
        run_client 0 version "$p" "$C1"
        assert_json '.supportedVersions | tojson' "$expected"
    done
}

# --- 2. CNI_COMMAND --------------------------------------------------------------------------

@test "no CNI_COMMAND: exit 0, empty stdout, about text on stderr" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin 0 "$p" - "$(make_config "$p")"
        assert_output ''
        assert_regex "$stderr" "CNI protocol versions supported"
    done
}

@test "unknown CNI_COMMAND gives code 4 naming it" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" FOO "$(make_config "$p")"
        assert_error 4 "unknown CNI_COMMAND: FOO"
    done
}

@test "CNI_COMMAND is case-sensitive: 'add' gives code 4" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" add "$(make_config "$p")"
        assert_error 4 "unknown CNI_COMMAND: add"
        assert_h_pristine
    done
}

# --- 3. missing environment ------------------------------------------------------------------

@test "ADD without CNI_CONTAINERID gives code 4" {
    expect_error_all 4 . -CNI_CONTAINERID
    assert_json .msg "required env variables [CNI_CONTAINERID] missing"
}

@test "ADD without CNI_NETNS gives code 4" {
    expect_error_all 4 . -CNI_NETNS
    assert_json .msg "required env variables [CNI_NETNS] missing"
}

@test "ADD without CNI_IFNAME gives code 4" {
    expect_error_all 4 . -CNI_IFNAME
    assert_json .msg "required env variables [CNI_IFNAME] missing"
}

@test "ADD with an empty CNI_IFNAME is treated as missing" {
    expect_error_all 4 . CNI_IFNAME=
    assert_json .msg "required env variables [CNI_IFNAME] missing"
}

@test "ADD without CNI_PATH gives code 4" {
    expect_error_all 4 . -CNI_PATH
    assert_json .msg "required env variables [CNI_PATH] missing"
}

@test "ADD with all variables missing lists them all" {
    expect_error_all 4 . -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME -CNI_PATH
    assert_json .msg "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
}

@test "CHECK with all variables missing lists them all" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" CHECK "$(make_config "$p")" \
            -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME -CNI_PATH
        assert_error 4 "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
    done
}

@test "DEL with all variables missing lists all but CNI_NETNS" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" DEL "$(make_config "$p")" \
            -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME -CNI_PATH
        assert_error 4 "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing"
    done
}

@test "DEL without CNI_NETNS and without prevResult succeeds with no output" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin 0 "$p" DEL "$(make_config "$p")" -CNI_NETNS
        assert_output ''
    done
}

# --- 4. invalid identifiers ------------------------------------------------------------------

@test "ifname '.' gives code 4" {
    expect_error_all 4 . CNI_IFNAME=.
}

@test "ifname '..' gives code 4" {
    expect_error_all 4 . CNI_IFNAME=..
}

@test "ifname 'a/b' gives code 4" {
    expect_error_all 4 . CNI_IFNAME=a/b
}

@test "ifname 'a:b' gives code 4" {
    expect_error_all 4 . CNI_IFNAME=a:b
}

@test "ifname 'a b' gives code 4" {
    expect_error_all 4 . "CNI_IFNAME=a b"
}

@test "ifname of 16 characters gives code 4" {
    expect_error_all 4 . CNI_IFNAME=0123456789abcdef
}

@test "container ID '-abc' gives code 4" {
    expect_error_all 4 . CNI_CONTAINERID=-abc
}

@test "container ID 'a/b' gives code 4" {
    expect_error_all 4 . CNI_CONTAINERID=a/b
}

# --- 5. bad config ---------------------------------------------------------------------------

@test "stdin that is not JSON gives code 6" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" ADD '{"cniVersion": "1.0.0", bad'
        assert_error 6
        assert_h_pristine
    done
}

@test "empty stdin on ADD gives code 6" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" ADD ''
        assert_error 6
    done
}

@test "a JSON array instead of an object gives code 6" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" ADD '[]'
        assert_error 6
    done
}

@test "missing network name gives code 7" {
    expect_error_all 7 'del(.name)'
}

@test "empty network name gives code 7" {
    expect_error_all 7 '.name = ""'
}

@test "network name with a space gives code 7" {
    expect_error_all 7 '.name = "a b"'
}

@test "network name with a leading dash gives code 7" {
    expect_error_all 7 '.name = "-net"'
}

@test "network name with a slash gives code 7" {
    expect_error_all 7 '.name = "net/1"'
}

@test "cniVersion 9.9.9 gives code 1" {
    expect_error_all 1 '.cniVersion = "9.9.9"'
    assert_json .msg "incompatible CNI versions"
}

@test "cniVersion that is not a version gives code 1" {
    expect_error_all 1 '.cniVersion = "abc"'
}

# --- 6. version gating -----------------------------------------------------------------------

@test "CHECK with cniVersion 0.3.1 gives code 1" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" CHECK "$(make_config "$p" '.cniVersion = "0.3.1"')"
        assert_error 1 "config version does not allow CHECK"
    done
}

@test "CHECK with cniVersion 0.1.0 gives code 1" {
    local p
    for p in "${PLUGINS[@]}"; do
        run_plugin '!' "$p" CHECK "$(make_config "$p" '.cniVersion = "0.1.0"')"
        assert_error 1
    done
}

@test "GC and STATUS with cniVersion 1.0.0 give code 1" {
    skip_if_reference "1.1.1 knows neither GC nor STATUS (answers code 3 'missing containerID')"
    local p verb
    for verb in GC STATUS; do
        for p in "${PLUGINS[@]}"; do
            run_plugin '!' "$p" "$verb" "$(make_config "$p" '.cniVersion = "1.0.0"')" \
                -CNI_CONTAINERID -CNI_NETNS -CNI_IFNAME
            assert_error 1
        done
    done
}

@test "ADD with cniVersion 1.1.0 is accepted by version gating" {
    skip_if_reference "1.1.1 supports cniVersion up to 1.0.0"
    # An invalid ifname makes the call fail after version reconciliation: code 4, not 1.
    expect_error_all 4 '.cniVersion = "1.1.0"' CNI_IFNAME=a/b
}
