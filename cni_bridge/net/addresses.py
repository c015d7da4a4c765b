"""Interface addresses: list, add (optionally without DAD), remove, replace, wait for DAD."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.net._parse import parse_address
from cni_bridge.net.errors import LinkNotFound, WaitTimeout
from cni_bridge.net.links import LinkRef, describe, index_of
from cni_bridge.net.model import IFA_F_NODAD, AddressInfo, IPInterface
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import (
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    RTM_DELADDR,
    RTM_GETADDR,
    RTM_NEWADDR,
    RTMGRP_IPV6_IFADDR,
)


def family_of(version: int | None) -> int:
    return {4: socket.AF_INET, 6: socket.AF_INET6, None: socket.AF_UNSPEC}[version]


def list_addresses(
    nl: Netlink, link: LinkRef | None = None, version: int | None = None
) -> list[AddressInfo]:
    """Addresses in the namespace, optionally of one link and/or one IP version (4 or 6)."""
    index = None if link is None else index_of(nl, link)
    msg = nl.codec.ifaddrmsg()
    msg["family"] = family_of(version)
    msg["index"] = index or 0
    where = nl.where if link is None else describe(link)
    replies = nl.call(f"cannot list addresses of {where}", msg, RTM_GETADDR, NLM_F_DUMP) or []
    found = [parse_address(reply) for reply in replies]
    return [
        a
        for a in found
        if (index is None or a.index == index)
        and (version is None or a.interface.version == version)
    ]


def _addr_msg(nl: Netlink, index: int, interface: IPInterface, flags: int = 0) -> Any:
    msg = nl.codec.ifaddrmsg()
    msg["family"] = family_of(interface.version)
    msg["prefixlen"] = interface.network.prefixlen
    msg["index"] = index
    msg["flags"] = flags & 0xFF
    ip = str(interface.ip)
    attrs: list[Any] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    if isinstance(interface, ipaddress.IPv4Interface) and interface.network.prefixlen < 31:
        # Set explicitly as the reference does (vishvananda/netlink): the kernel won't derive it.
        attrs.append(("IFA_BROADCAST", str(interface.network.broadcast_address)))
    if flags:
        attrs.append(("IFA_FLAGS", flags))
    msg["attrs"] = attrs
    return msg


def ensure_address(
    nl: Netlink, link: LinkRef, interface: IPInterface, *, nodad: bool = False
) -> bool:
    """Add ``interface`` to ``link``; False if exactly that one was already there. ``nodad``
    (IPv6): IFA_F_NODAD, usable at once, no duplicate address detection."""
    flags = IFA_F_NODAD if nodad and interface.version == 6 else 0
    msg = _addr_msg(nl, index_of(nl, link), interface, flags)
    what = f"cannot add address {interface} to {describe(link)}"
    replies = nl.call(what, msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, tolerate=(errno.EEXIST,))
    return replies is not None


def remove_address(nl: Netlink, link: LinkRef, interface: IPInterface) -> bool:
    """Remove ``interface`` from ``link``; False if it (or the link) was already gone."""
    try:
        index = index_of(nl, link)
    except LinkNotFound:
        return False
    msg = _addr_msg(nl, index, interface)
    what = f"cannot remove address {interface} from {describe(link)}"
    gone = (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH)
    return nl.call(what, msg, RTM_DELADDR, tolerate=gone) is not None


def ensure_address_replacing(
    nl: Netlink,
    link: LinkRef,
    interface: IPInterface,
    stale: Sequence[AddressInfo],
    *,
    nodad: bool = False,
) -> bool:
    """Remove the ``stale`` addresses (the caller decides which: ``forceAddress``), then ensure
    ``interface``. An entry of ``stale`` equal to ``interface`` is kept. Returns ensure's result."""
    for old in stale:
        if old.interface != interface:
            remove_address(nl, link, old.interface)
    return ensure_address(nl, link, interface, nodad=nodad)


def wait_addresses_settled(nl: Netlink, link: LinkRef, timeout: float = 5.0) -> list[AddressInfo]:
    """Wait (on address events, up to ``timeout`` s) until no IPv6 address of ``link`` is
    tentative; return its IPv6 addresses. CniError names an address that failed DAD."""
    pending: list[AddressInfo] = []

    def probe() -> list[AddressInfo] | None:
        found = list_addresses(nl, link, version=6)
        failed = [a for a in found if a.dad_failed]
        if failed:
            raise CniError(
                f"address {failed[0].interface} on {describe(link)} "
                "failed duplicate address detection"
            )
        pending[:] = [a for a in found if a.tentative]
        return None if pending else found

    settled = nl.wait_for(RTMGRP_IPV6_IFADDR, probe, timeout)
    if settled is None:
        names = ", ".join(str(a.interface) for a in pending)
        raise WaitTimeout(
            f"address {names} on {describe(link)} still tentative after {timeout:g} s"
        )
    return settled
