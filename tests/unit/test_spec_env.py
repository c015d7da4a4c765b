"""CNI_* environment: required variables per verb and libcni's validation rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_bridge.admin.runtime import Attachment, validate_attachment
from cni_bridge.cni.env import (
    read_env,
    valid_name,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from cni_bridge.cni.errors import CniError
from cni_bridge.deploy.confdir import ConflistError, parse_network_list
from cni_bridge.ipam.host_local.config import StoreLocation
from cni_bridge.ipam.host_local.file_store import FileStore

CONFLIST = {"cniVersion": "1.0.0", "name": "abc", "plugins": [{"type": "x"}]}

FULL = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def env(**overrides: str | None) -> dict[str, str]:
    out = dict(FULL)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def error_of(fn: object, *args: object) -> CniError:
    with pytest.raises(CniError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


# ------------------------------------------------------------------ missing variables

@pytest.mark.parametrize(
    ("command", "missing"),
    [
        ("ADD", "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"),
        ("CHECK", "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"),
        ("DEL", "CNI_CONTAINERID,CNI_IFNAME,CNI_PATH"),  # CNI_NETNS is optional for DEL
        ("GC", "CNI_PATH"),
        ("STATUS", "CNI_PATH"),
    ],
)
def test_all_missing_variables_are_reported_together_in_skel_order(
    command: str, missing: str
) -> None:
    err = error_of(read_env, {"CNI_COMMAND": command})
    assert err.code == 4
    assert err.msg == f"required env variables [{missing}] missing"
    assert err.details == ""


def test_version_needs_nothing_but_the_command() -> None:
    assert read_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_unknown_verb_requires_nothing_more() -> None:
    # skel only knows what ADD/DEL/CHECK/GC/STATUS need; the verb itself is refused later.
    assert read_env({"CNI_COMMAND": "FOO"}).command == "FOO"


def test_empty_value_counts_as_missing() -> None:
    err = error_of(read_env, env(CNI_IFNAME="", CNI_PATH=""))
    assert err.msg == "required env variables [CNI_IFNAME,CNI_PATH] missing"


def test_empty_container_id_is_missing_code_4_not_3() -> None:
    err = error_of(read_env, env(CNI_CONTAINERID=""))
    assert (err.code, err.msg) == (4, "required env variables [CNI_CONTAINERID] missing")


def test_del_without_netns_is_fine_and_path_is_split() -> None:
    e = read_env(env(CNI_COMMAND="DEL", CNI_NETNS=None, CNI_PATH="/a::/b:", CNI_ARGS="K=V"))
    assert (e.netns, e.path, e.args) == ("", ("/a", "/b"), "K=V")


def test_invalid_value_wins_over_missing_variables() -> None:
    # skel validates each set variable as it reads it and returns at once.
    err = error_of(read_env, env(CNI_CONTAINERID="bad id", CNI_PATH=None))
    assert (err.code, err.msg) == (4, "invalid characters in containerID")


def test_variables_are_validated_in_env_order() -> None:
    err = error_of(read_env, env(CNI_CONTAINERID="bad/id", CNI_IFNAME="a:b"))
    assert err.msg == "invalid characters in containerID"


def test_ifname_invalid_is_reported_even_if_container_id_missing() -> None:
    err = error_of(read_env, env(CNI_CONTAINERID=None, CNI_IFNAME="a b"))
    assert err.msg == "interface name contains / or : or whitespace characters"


@pytest.mark.parametrize("command", ["GC", "STATUS", "VERSION"])
def test_values_not_required_by_the_verb_are_not_validated(command: str) -> None:
    e = read_env(env(CNI_COMMAND=command, CNI_CONTAINERID="not valid!", CNI_IFNAME="a/b"))
    assert e.container_id == "not valid!"


# ------------------------------------------------------------------ container ID

@pytest.mark.parametrize("cid", ["a", "0", "abc-DEF_123.x", "Z" * 200, "9.9-9_"])
def test_valid_container_ids(cid: str) -> None:
    validate_container_id(cid)


def test_empty_container_id_is_code_3() -> None:
    err = error_of(validate_container_id, "")
    assert (err.code, err.msg) == (3, "missing containerID")


@pytest.mark.parametrize(
    "cid", ["-a", "_a", ".a", "a b", "a/b", "a:b", "é", "a\n", "a\x00", "a\u0661", "\udcff"]
)
def test_bad_container_id_characters_are_code_4_with_the_id_in_details(cid: str) -> None:
    err = error_of(validate_container_id, cid)
    assert (err.code, err.msg, err.details) == (4, "invalid characters in containerID", cid)


# ------------------------------------------------------------------ ifname

@pytest.mark.parametrize("name", ["eth0", "a", "x" * 15, "é" * 7 + "x", "net-1.2_3", "...", ".x"])
def test_valid_ifnames(name: str) -> None:
    validate_ifname(name)


def test_empty_ifname() -> None:
    err = error_of(validate_ifname, "")
    assert (err.code, err.msg) == (4, "interface name is empty")


@pytest.mark.parametrize("name", ["x" * 16, "é" * 8, "ab\u20ac" * 4, "x" * 14 + "\udcff\udcfe"])
def test_ifname_over_15_bytes_is_too_long(name: str) -> None:
    err = error_of(validate_ifname, name)
    assert (err.code, err.msg) == (4, "interface name is too long")
    assert err.details == "interface name should be less than 16 characters"


def test_ifname_with_undecodable_byte_counts_one_byte() -> None:
    validate_ifname("x" * 14 + "\udcff")  # one raw byte from os.environ: 15 bytes


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_ifnames(name: str) -> None:
    err = error_of(validate_ifname, name)
    assert (err.code, err.msg) == (4, "interface name is . or ..")


@pytest.mark.parametrize("name", ["a/b", "a:b", "a b", "\tx", "x\n", "a\u00a0b", "a\u3000b", "/"])
def test_ifname_separators_and_whitespace(name: str) -> None:
    err = error_of(validate_ifname, name)
    assert (err.code, err.msg) == (4, "interface name contains / or : or whitespace characters")


# ------------------------------------------------------------------ network name

@pytest.mark.parametrize("name", ["mynet", "k8s-pod-network", "n.1_2-3"])
def test_valid_network_names(name: str) -> None:
    assert validate_network_name(name) == name


@pytest.mark.parametrize("name", [None, "", 5, ["x"]])
def test_missing_network_name_is_code_7(name: object) -> None:
    err = error_of(validate_network_name, name)
    assert (err.code, err.msg) == (7, "missing network name")


@pytest.mark.parametrize("name", ["-net", "my net", "net/1", "net\n", "né"])
def test_bad_network_name_characters_are_code_7(name: str) -> None:
    err = error_of(validate_network_name, name)
    assert (err.code, err.msg, err.details) == (7, "invalid characters found in network name", name)


def test_every_name_check_refuses_a_trailing_newline(tmp_path: Path) -> None:
    """One pattern, matched whole: Python's "$" would let "abc\\n" through."""
    assert valid_name("abc") and not valid_name("abc\n")
    with pytest.raises(ConflistError, match="invalid or missing network name"):
        parse_network_list({"cniVersion": "1.0.0", "name": "abc\n", "plugins": [{"type": "x"}]})
    with pytest.raises(ConflistError, match="invalid container ID"):
        validate_attachment(parse_network_list(CONFLIST), Attachment("abc\n"))
    with pytest.raises(CniError, match="invalid network name for the IPAM store"):
        FileStore.open(StoreLocation(str(tmp_path), "abc\n"), create=True)
    assert error_of(validate_container_id, "abc\n").msg == "invalid characters in containerID"


@pytest.mark.parametrize("ifname", ["", ".", "..", "eth/0", "eth:0", "eth 0", "e" * 16,
                                    "é" * 8, "eth\udcff" * 4])
def test_the_runtime_refuses_what_the_plugins_refuse_as_an_ifname(ifname: str) -> None:
    """One rule for interface names: the runtime's and CNI_IFNAME's (bytes, as the kernel)."""
    assert error_of(validate_ifname, ifname).code == 4
    with pytest.raises(ConflistError, match="invalid interface name"):
        validate_attachment(parse_network_list(CONFLIST), Attachment("abc", ifname))
    validate_attachment(parse_network_list(CONFLIST), Attachment("abc", "e" * 15))
