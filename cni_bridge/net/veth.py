"""Veth pairs whose container end is created directly inside the container's namespace."""

from __future__ import annotations

import errno
import os
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.net.errors import NetlinkOpError
from cni_bridge.net.links import find_link, get_link, link_msg
from cni_bridge.net.model import VethPair, VethSpec
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import NLM_F_CREATE, NLM_F_EXCL, RTM_NEWLINK

NAME_ATTEMPTS = 10  # random host-side names tried before giving up (as the reference does)


def random_veth_name() -> str:
    """``veth`` + 8 lowercase hex chars (4 random bytes), the reference plugin's format."""
    return "veth" + os.urandom(4).hex()


def create_veth_pair(host: Netlink, container: Netlink, spec: VethSpec) -> VethPair:
    """The host end in ``host``'s namespace, ``spec.ifname`` created straight in
    ``container``'s (IFLA_NET_NS_FD: no interface is ever moved). The same socket twice puts
    both ends in one namespace (a VLAN gateway)."""
    if container.netns is None and host.netns is not None:
        raise ValueError("create_veth_pair: the container socket is not bound to a namespace")
    attempts = 1 if spec.host_name else NAME_ATTEMPTS
    host_name = ""
    for _ in range(attempts):
        host_name = spec.host_name or random_veth_name()
        if _try_create(host, container, spec, host_name):
            host_end = get_link(host, host_name)
            return VethPair(host=host_end, container=get_link(container, spec.ifname))
    raise NetlinkOpError(
        f'cannot find a free host veth name after {attempts} attempts (last tried "{host_name}")',
        errno=errno.EEXIST,
    )


def _try_create(host: Netlink, container: Netlink, spec: VethSpec, host_name: str) -> bool:
    """True if created; False if ``host_name`` is taken; CniError if the container name is."""
    msg = _veth_msg(host, container, spec, host_name)
    what = f'cannot create veth pair "{host_name}" / "{spec.ifname}" ({container.where})'
    replies = host.call(what, msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, tolerate=(errno.EEXIST,))
    if replies is not None:
        return True
    # EEXIST: either name may be the taken one; only the container side is fatal.
    if find_link(container, spec.ifname) is not None:
        raise CniError(f'container veth name "{spec.ifname}" already exists')
    if spec.host_name:
        raise NetlinkOpError(f'host veth name "{host_name}" already exists', errno=errno.EEXIST)
    return False


def _veth_msg(host: Netlink, container: Netlink, spec: VethSpec, host_name: str) -> Any:
    peer: list[Any] = [("IFLA_IFNAME", spec.ifname)]
    if container.netns is not None:
        peer.append(("IFLA_NET_NS_FD", container.netns.fileno()))
    if spec.mtu:
        peer.append(("IFLA_MTU", spec.mtu))
    if spec.mac:
        peer.append(("IFLA_ADDRESS", spec.mac.lower()))
    msg = link_msg(host, host_name)
    if spec.mtu:
        msg["attrs"].append(("IFLA_MTU", spec.mtu))
    data = {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]}
    msg["attrs"].append(
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", data)]})
    )
    return msg
