"""Version parsing and the verb/version gates."""

from __future__ import annotations

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.versions import (
    SUPPORTED_VERSIONS,
    at_least,
    ensure_supported,
    ensure_verb_allowed,
    parse_version,
)

ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def test_supported_versions_are_the_references() -> None:
    assert SUPPORTED_VERSIONS == ALL


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1.1.0", (1, 1, 0)), ("0.3.1", (0, 3, 1)), ("1", (1, 0, 0)), ("1.2", (1, 2, 0)),
     ("+1.0.0", (1, 0, 0)), ("010.1.1", (10, 1, 1)), ("-1.0.0", (-1, 0, 0))],
)
def test_parse_version_like_go_atoi(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    "text", ["", "1.0.0.0", "a.b.c", "1..0", "1.0.", " 1.0.0", "1.0.0 ", "1_0.0.0", "\u0661.0.0",
             "v1.0.0", "1.0.0-rc1", "."],
)
def test_malformed_versions_are_code_6(text: str) -> None:
    with pytest.raises(CniError) as info:
        parse_version(text)
    assert info.value.code == 6


def test_at_least() -> None:
    assert at_least("0.4.0", "0.4.0")
    assert at_least("1.0", "0.4.0")
    assert not at_least("0.3.1", "0.4.0")
    assert at_least("10.0.0", "9.9.9")


@pytest.mark.parametrize("version", ALL)
def test_every_supported_version_is_accepted(version: str) -> None:
    ensure_supported(version)


@pytest.mark.parametrize("version", ["1.2.0", "0.5.0", "1.0", "abc", "", "1.1.0 "])
def test_unsupported_version_is_code_1_naming_the_versions(version: str) -> None:
    with pytest.raises(CniError) as info:
        ensure_supported(version)
    err = info.value
    assert (err.code, err.msg) == (1, "incompatible CNI versions")
    # Go's fmt "%q" of the string and of the []string, as libcni's reconciler writes them.
    assert err.details == (
        f'config is "{version}", plugin supports '
        '["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]'
    )


@pytest.mark.parametrize(
    ("command", "version", "code"),
    [
        ("CHECK", "0.1.0", 1), ("CHECK", "0.2.0", 1), ("CHECK", "0.3.0", 1), ("CHECK", "0.3.1", 1),
        ("CHECK", "0.4.0", None), ("CHECK", "1.0.0", None), ("CHECK", "1.1.0", None),
        ("GC", "1.0.0", 1), ("GC", "0.4.0", 1), ("GC", "1.1.0", None), ("GC", "2.0.0", None),
        ("STATUS", "1.0.0", 1), ("STATUS", "0.1.0", 1), ("STATUS", "1.1.0", None),
        ("ADD", "0.1.0", None), ("DEL", "0.1.0", None), ("ADD", "garbage", None),
        ("CHECK", "x.y.z", 6), ("GC", "1.1.0.0", 6), ("STATUS", "1.a", 6),
        ("CHECK", "-1.0.0", 1),  # Go's Atoi takes the sign: it parses, and is too old
    ],
)
def test_verb_gates(command: str, version: str, code: int | None) -> None:
    if code is None:
        ensure_verb_allowed(command, version)
        return
    with pytest.raises(CniError) as info:
        ensure_verb_allowed(command, version)
    assert info.value.code == code
    if code == 1:
        assert info.value.msg == f"config version does not allow {command}"
