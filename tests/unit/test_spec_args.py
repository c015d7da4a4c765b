"""CNI_ARGS parsing with types.LoadArgs semantics."""

from __future__ import annotations

import pytest

from cni_bridge.cni.args import parse_cni_args, split_cni_args
from cni_bridge.cni.errors import CniError

KNOWN = frozenset({"IP", "MAC"})


def test_empty_args() -> None:
    assert split_cni_args("") == []
    assert parse_cni_args("", KNOWN) == {}


def test_known_keys_are_returned_unknown_ignored_ones_dropped() -> None:
    raw = "IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=web;MAC=aa:bb:cc:dd:ee:ff"
    assert parse_cni_args(raw, KNOWN) == {"IP": "10.0.0.5", "MAC": "aa:bb:cc:dd:ee:ff"}


def test_last_duplicate_wins() -> None:
    assert parse_cni_args("IP=10.0.0.1;IP=10.0.0.2", KNOWN) == {"IP": "10.0.0.2"}


def test_empty_value_is_a_valid_pair() -> None:
    assert split_cni_args("IP=") == [("IP", "")]


@pytest.mark.parametrize("raw", ["IP", "IP=1=2", "IP=1;", ";IP=1", "IP=1;;MAC=2", "a=b=c"])
def test_invalid_pair(raw: str) -> None:
    with pytest.raises(CniError) as info:
        parse_cni_args(raw, KNOWN)
    assert info.value.msg.startswith("ARGS: invalid pair ")
    assert info.value.code == 999


def test_invalid_pair_message_quotes_the_pair_like_go() -> None:
    with pytest.raises(CniError) as info:
        split_cni_args("IP=1;oops")
    assert info.value.msg == 'ARGS: invalid pair "oops"'


def test_unknown_keys_are_an_error_listing_the_pairs() -> None:
    with pytest.raises(CniError) as info:
        parse_cni_args("K8S_POD_NAME=web;IP=10.0.0.5;FOO=bar", KNOWN)
    assert info.value.msg == 'ARGS: unknown args ["K8S_POD_NAME=web" "FOO=bar"]'
    assert info.value.code == 999


def test_keys_are_case_sensitive() -> None:
    with pytest.raises(CniError, match="unknown args"):
        parse_cni_args("ip=10.0.0.5", KNOWN)


def test_lowercase_ignoreunknown_is_itself_an_unknown_key() -> None:
    with pytest.raises(CniError) as info:
        parse_cni_args("ignoreunknown=1;FOO=bar", KNOWN)
    assert info.value.msg == 'ARGS: unknown args ["ignoreunknown=1" "FOO=bar"]'


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "tRuE"])
def test_ignore_unknown_true_values(value: str) -> None:
    assert parse_cni_args(f"IgnoreUnknown={value};FOO=bar;IP=1.2.3.4", KNOWN) == {"IP": "1.2.3.4"}


@pytest.mark.parametrize("value", ["0", "false", "False", "FALSE"])
def test_ignore_unknown_false_values_still_refuse_unknown_keys(value: str) -> None:
    with pytest.raises(CniError, match="unknown args"):
        parse_cni_args(f"IgnoreUnknown={value};FOO=bar", KNOWN)
    assert parse_cni_args(f"IgnoreUnknown={value};IP=1.2.3.4", KNOWN) == {"IP": "1.2.3.4"}


@pytest.mark.parametrize("value", ["yes", "2", "on", "", " 1", "t"])
def test_ignore_unknown_garbage_is_an_error(value: str) -> None:
    with pytest.raises(CniError) as info:
        parse_cni_args(f"IgnoreUnknown={value};IP=1.2.3.4", KNOWN)
    assert info.value.msg == "ARGS: invalid value for IgnoreUnknown"


def test_ignore_unknown_is_not_returned_as_a_key() -> None:
    assert parse_cni_args("IgnoreUnknown=1", KNOWN) == {}
