"""Interfaces: look up, list, set up/down, MTU, MAC, master, promiscuity, delete, wait for UP.

A link is named by ``LinkRef``: an index, a name, or a ``LinkInfo`` (its index is used). Names
are resolved by the kernel in the request itself, so naming a link by name costs no extra call.
"""

from __future__ import annotations

import errno
from typing import Any

from cni_bridge.net._parse import parse_link
from cni_bridge.net.errors import LinkNotFound, WaitTimeout
from cni_bridge.net.model import IFF_PROMISC, IFF_UP, LinkInfo, OperState
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import NLM_F_DUMP, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK, RTMGRP_LINK

LinkRef = int | str | LinkInfo

RTEXT_FILTER_SKIP_STATS = 1 << 3


def describe(link: LinkRef) -> str:
    """``interface "eth0"`` / ``interface index 7``, for messages."""
    if isinstance(link, LinkInfo):
        return f'interface "{link.name}"'
    if isinstance(link, str):
        return f'interface "{link}"'
    return f"interface index {link}"


def link_msg(nl: Netlink, link: LinkRef | None = None, family: int = 0) -> Any:
    """An ``ifinfmsg`` addressed to ``link`` (by index, or by IFLA_IFNAME)."""
    msg = nl.codec.ifinfmsg()
    msg["family"] = family
    msg["index"] = 0
    msg["attrs"] = []
    if isinstance(link, LinkInfo):
        msg["index"] = link.index
    elif isinstance(link, int):
        msg["index"] = link
    elif isinstance(link, str):
        msg["attrs"].append(("IFLA_IFNAME", link))
    return msg


def find_link(nl: Netlink, link: LinkRef) -> LinkInfo | None:
    """The link, or None if there is none by that name/index in ``nl``'s namespace."""
    msg = link_msg(nl, link)
    msg["attrs"].append(("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS))
    replies = nl.call(f"cannot read {describe(link)}", msg, RTM_GETLINK, tolerate=(errno.ENODEV,))
    if not replies:
        return None
    return parse_link(replies[0])


def get_link(nl: Netlink, link: LinkRef) -> LinkInfo:
    info = find_link(nl, link)
    if info is None:
        raise LinkNotFound(f"{describe(link)} not found in {nl.where}")
    return info


def list_links(
    nl: Netlink, *, kind: str | None = None, master: LinkRef | None = None
) -> list[LinkInfo]:
    """Every link in the namespace, optionally only of one ``kind`` or enslaved to ``master``."""
    msg = link_msg(nl)
    msg["attrs"].append(("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS))
    master_index = None if master is None else index_of(nl, master)
    if master_index is not None:
        msg["attrs"].append(("IFLA_MASTER", master_index))
    if kind is not None:
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    replies = nl.call(f"cannot list interfaces in {nl.where}", msg, RTM_GETLINK, NLM_F_DUMP) or []
    links = [parse_link(reply) for reply in replies]
    return [
        link
        for link in links
        if (kind is None or link.kind == kind)
        and (master_index is None or link.master_index == master_index)
    ]


def index_of(nl: Netlink, link: LinkRef) -> int:
    """The index of ``link`` (a lookup only when it is given by name)."""
    if isinstance(link, LinkInfo):
        return link.index
    if isinstance(link, int):
        return link
    return get_link(nl, link).index


def _set_flags(nl: Netlink, link: LinkRef, flags: int, mask: int, what: str) -> None:
    msg = link_msg(nl, link)
    msg["flags"] = flags
    msg["change"] = mask
    nl.call(f"cannot {what} {describe(link)}", msg, RTM_SETLINK)


def set_link_up(nl: Netlink, link: LinkRef) -> None:
    _set_flags(nl, link, IFF_UP, IFF_UP, "set up")


def set_promisc(nl: Netlink, link: LinkRef, on: bool) -> None:
    _set_flags(
        nl, link, IFF_PROMISC if on else 0, IFF_PROMISC, f"set promisc {'on' if on else 'off'} on"
    )


def _set_attr(nl: Netlink, link: LinkRef, name: str, value: Any, what: str) -> None:
    msg = link_msg(nl, link)
    msg["attrs"].append((name, value))
    nl.call(f"cannot {what} of {describe(link)}", msg, RTM_SETLINK)


def set_mac(nl: Netlink, link: LinkRef, mac: str) -> None:
    """Set the MAC address. On a bridge this also pins it: it stops following its ports' MACs."""
    _set_attr(nl, link, "IFLA_ADDRESS", mac.lower(), f"set MAC address {mac}")


def set_master(nl: Netlink, link: LinkRef, master: LinkRef | None) -> None:
    """Enslave ``link`` to ``master`` (a bridge); None releases it."""
    index = 0 if master is None else index_of(nl, master)
    what = "release" if master is None else f"set master {describe(master)}"
    msg = link_msg(nl, link)
    msg["attrs"].append(("IFLA_MASTER", index))
    nl.call(f"cannot {what} for {describe(link)}", msg, RTM_SETLINK)


def remove_link(nl: Netlink, link: LinkRef) -> bool:
    """Delete ``link`` (a veth takes its peer with it). False if it was already gone."""
    msg = link_msg(nl, link)
    replies = nl.call(f"cannot delete {describe(link)}", msg, RTM_DELLINK, tolerate=(errno.ENODEV,))
    return replies is not None


def wait_link_oper_up(nl: Netlink, link: LinkRef, timeout: float = 3.0) -> LinkInfo:
    """Wait (on link events, up to ``timeout`` s) until ``link`` is oper-UP; WaitTimeout names
    the last state seen."""
    last: list[LinkInfo] = []

    def probe() -> LinkInfo | None:
        info = get_link(nl, link)
        last[:] = [info]
        return info if info.oper_state is OperState.UP else None

    info = nl.wait_for(RTMGRP_LINK, probe, timeout)
    if info is None:
        state = last[0].oper_state.value if last else "unknown"
        raise WaitTimeout(
            f"{describe(link)} is not operationally up after {timeout:g} s (state {state})"
        )
    return info
