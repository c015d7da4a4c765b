"""The loopback role's pure parts: the result it plans, and how that result is printed."""

from __future__ import annotations

import json
from ipaddress import ip_interface

import pytest

from cni_bridge import PLUGIN_ROLES
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import render_result
from cni_bridge.entry import role_from_argv0
from cni_bridge.loopback.plugin import is_loopback, plan_result
from tests.unit.test_import_budget import VERSION_IMPORTS, imported_by

ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LO4, LO4B, LO6 = ip_interface("127.0.0.1/8"), ip_interface("127.0.0.2/8"), ip_interface("::1/128")


def test_loopback_is_a_role_of_the_executable_installed_and_served() -> None:
    assert "loopback" in PLUGIN_ROLES
    assert role_from_argv0("/opt/cni/bin/loopback") == "loopback"
    # install links and the bootloader serves (build/bootloader/wire_header.py) PLUGIN_ROLES


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_the_result_keeps_the_1x_shape_under_every_version_label(version: str) -> None:
    text = render_result(plan_result("/run/netns/c", [LO4, LO4B, LO6]), version)
    assert json.loads(text) == {
        "cniVersion": version,
        "interfaces": [{"mac": "00:00:00:00:00:00", "name": "lo", "sandbox": "/run/netns/c"}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0},
                {"address": "::1/128", "interface": 0}],
    }
    assert list(json.loads(text)) == ["cniVersion", "interfaces", "ips"]  # sorted, no dns
    assert text.startswith("{\n    ") and not text.endswith("\n")


def test_only_the_families_present_are_listed() -> None:
    result = plan_result("/run/netns/c", [LO6])
    assert [str(ip.address) for ip in result.ips] == ["::1/128"]
    assert plan_result("/run/netns/c", []).ips == ()


@pytest.mark.parametrize("address", ["10.0.0.1/8", "fe80::1/64", "2001:db8::1/64"])
def test_a_non_loopback_address_is_refused_by_name(address: str) -> None:
    with pytest.raises(CniError) as err:
        plan_result("/run/netns/c", [LO4, ip_interface(address)])
    assert err.value.msg == (
        f'loopback interface found with non-loopback address "{ip_interface(address).ip}"')
    assert "/run/netns/c" in err.value.details


def test_loopback_addresses_as_go_sees_them() -> None:
    assert is_loopback(ip_interface("127.255.0.1/8"))
    assert is_loopback(ip_interface("::1/128"))
    assert is_loopback(ip_interface("::ffff:127.0.0.1/104"))  # Go's To4() makes it IPv4
    assert not is_loopback(ip_interface("::2/128"))


def test_loopback_version_imports_only_the_version_constants() -> None:
    assert imported_by("/opt/cni/bin/loopback", {"CNI_COMMAND": "VERSION"}) == VERSION_IMPORTS
