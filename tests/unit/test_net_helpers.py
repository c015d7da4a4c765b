"""Pure helpers of the net layer: names, sysctl paths and semantics, error decoding, imports."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.net import sysctl
from cni_bridge.net.bridge import vlan_infos
from cni_bridge.net.errors import LinkNotFound, NetnsNotFound, SysctlError, op_error
from cni_bridge.net.model import BridgeVlan
from cni_bridge.net.netns import open_netns
from cni_bridge.net.sysctl import SysctlOutcome, ensure_sysctl, get_sysctl
from cni_bridge.net.veth import random_veth_name

REPO = Path(__file__).resolve().parents[2]

# --- names ------------------------------------------------------------------------------------


def test_random_veth_name_format() -> None:
    names = {random_veth_name() for _ in range(200)}
    assert all(re.fullmatch(r"veth[0-9a-f]{8}", n) for n in names)
    assert len(names) == 200  # 32 random bits: no repeats in 200 draws
    assert all(len(n) <= 15 for n in names)  # IFNAMSIZ - 1


# --- VLAN data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"vid": 1}, True),
        ({"vid": 4094}, True),
        ({"vid": 0}, False),
        ({"vid": 4095}, False),
        ({"vid": 10, "vid_end": 20}, True),
        ({"vid": 20, "vid_end": 10}, False),
        ({"vid": 10, "vid_end": 20, "pvid": True}, False),
        ({"vid": 10, "vid_end": 10, "pvid": True}, True),
    ],
)
def test_bridge_vlan_validation(kwargs: dict[str, int | bool], ok: bool) -> None:
    if ok:
        BridgeVlan(**kwargs)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            BridgeVlan(**kwargs)  # type: ignore[arg-type]


def test_vlan_infos_flags() -> None:
    infos = vlan_infos(
        [BridgeVlan(1, pvid=True, untagged=True), BridgeVlan(5, 5), BridgeVlan(7, 9)]
    )
    assert infos == [
        {"flags": 0x6, "vid": 1},
        {"flags": 0x0, "vid": 5},
        {"flags": 0x8, "vid": 7},
        {"flags": 0x10, "vid": 9},
    ]


# --- netlink error translation ---------------------------------------------------------------


def test_op_error_maps_enodev_to_link_not_found() -> None:
    err = op_error('cannot set up interface "x"', OSError(errno.ENODEV, "No such device"))
    assert isinstance(err, LinkNotFound) and err.errno == errno.ENODEV
    assert str(err) == 'cannot set up interface "x": No such device'
    assert isinstance(err, CniError)


# --- sysctls on a fake /proc/sys --------------------------------------------------------------


@pytest.fixture
def proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sys"
    (root / "net/ipv4/conf/cni0").mkdir(parents=True)
    (root / "net/ipv4/ip_forward").write_text("0\n")
    (root / "net/ipv4/conf/cni0/arp_notify").write_text("1\n")
    (root / "net/ipv4/ip_local_port_range").write_text("32768\t60999\n")
    monkeypatch.setattr(sysctl, "PROC_SYS", str(root))
    return root


@pytest.mark.parametrize(
    ("key", "rel", "shown"),
    [
        ("net.ipv4.ip_forward", "net/ipv4/ip_forward", "net.ipv4.ip_forward"),
        ("net/ipv4/ip_forward", "net/ipv4/ip_forward", "net.ipv4.ip_forward"),
        (
            "net/ipv6/conf/cni0.100/accept_ra",
            "net/ipv6/conf/cni0.100/accept_ra",
            "net/ipv6/conf/cni0.100/accept_ra",
        ),
    ],
)
def test_sysctl_keys(key: str, rel: str, shown: str) -> None:
    assert sysctl.sysctl_relpath(key) == rel
    assert sysctl.display_key(key) == shown


@pytest.mark.parametrize("key", ["", "/net/ipv4/x", "net/../etc", "net//x", "net.ipv4.", "."])
def test_sysctl_bad_keys(key: str) -> None:
    with pytest.raises(ValueError):
        sysctl.sysctl_relpath(key)


def test_ensure_sysctl_writes_only_when_different(proc_sys: Path) -> None:
    assert ensure_sysctl("net.ipv4.conf.cni0.arp_notify", 1) is SysctlOutcome.UNCHANGED
    assert ensure_sysctl("net.ipv4.ip_forward", 1) is SysctlOutcome.WRITTEN
    assert (proc_sys / "net/ipv4/ip_forward").read_text().strip() == "1"
    assert get_sysctl("net/ipv4/ip_forward") == "1"
    assert ensure_sysctl("net.ipv4.ip_local_port_range", "32768 60999") is SysctlOutcome.UNCHANGED


def _read_only_proc(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make opening files under ``root`` for writing fail with EROFS (like a read-only mount)."""
    real_open = os.open

    def ro_open(path: str, flags: int, *args: int) -> int:
        if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", ro_open)


def test_read_only_proc_sys_is_fine_when_value_is_right(
    proc_sys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _read_only_proc(proc_sys, monkeypatch)
    assert ensure_sysctl("net.ipv4.conf.cni0.arp_notify", "1") is SysctlOutcome.UNCHANGED


def test_read_only_proc_sys_with_wrong_value_names_the_sysctl(
    proc_sys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _read_only_proc(proc_sys, monkeypatch)
    with pytest.raises(SysctlError) as info:
        ensure_sysctl("net.ipv4.ip_forward", 1)
    assert info.value.key == "net.ipv4.ip_forward"
    assert str(info.value) == (
        "cannot set sysctl net.ipv4.ip_forward to 1 (currently 0): Read-only file system"
    )


def test_missing_sysctl_is_an_error(proc_sys: Path) -> None:
    with pytest.raises(SysctlError, match="sysctl net.ipv4.conf.eth9.arp_notify does not exist"):
        ensure_sysctl("net.ipv4.conf.eth9.arp_notify", 1)


def test_ipv6_sysctls_are_skipped_without_ipv6(proc_sys: Path) -> None:
    assert ensure_sysctl("net/ipv6/conf/cni0/accept_ra", 0) is SysctlOutcome.SKIPPED
    assert get_sysctl("net.ipv6.conf.all.forwarding") is None


def test_missing_ipv6_interface_sysctl_is_an_error_when_ipv6_exists(proc_sys: Path) -> None:
    (proc_sys / "net/ipv6/conf/all").mkdir(parents=True)
    with pytest.raises(SysctlError, match="net.ipv6.conf.eth9.accept_ra does not exist"):
        ensure_sysctl("net/ipv6/conf/eth9/accept_ra", 0)


# --- namespaces (read-only checks, no namespace is entered or created) ------------------------


def test_open_netns_missing_path_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "gone"
    with pytest.raises(NetnsNotFound, match=f'network namespace "{path}" does not exist'):
        open_netns(str(path))
    assert not path.exists()


def test_open_netns_rejects_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(CniError, match="is not a network namespace"):
        open_netns(str(path))


def test_open_netns_rejects_another_namespace_type() -> None:
    with pytest.raises(CniError, match="is a namespace but not a network namespace"):
        open_netns("/proc/self/ns/uts")


def test_own_namespace_opens_and_closes() -> None:
    with open_netns("/proc/self/ns/net") as handle:  # opening (not entering) is harmless
        assert handle.fileno() >= 0
    assert handle.closed


# --- imports ----------------------------------------------------------------------------------


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_importing_the_package_loads_no_pyroute2() -> None:
    code = "import sys, cni_bridge.net; print(sorted(m for m in sys.modules if 'pyroute2' in m))"
    assert _run(code) == "[]"


def test_codec_loads_only_message_modules() -> None:
    code = (
        "import sys; from cni_bridge.net._codec import codec; codec(); "
        "print(all(m not in sys.modules for m in "
        "('asyncio', 'pyroute2.ndb', 'pyroute2.iproute', 'pyroute2.ipdb')))"
    )
    assert _run(code) == "True"
