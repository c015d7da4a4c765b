"""The container's ``lo``: set it up or down, read its state and addresses.

Three rtnetlink messages, hand-packed: pyroute2's ifinfmsg and ifaddrmsg cost ~15 ms to import
on every loopback call, more than all of its kernel work. The socket is opened with the thread
briefly in the container's namespace (``enter_netns``) and stays bound to it afterwards.
"""

from __future__ import annotations

import _socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface

from cni_bridge import netlink
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import IPInterface
from cni_bridge.net.errors import describe_errno
from cni_bridge.net.netns import NetnsHandle, enter_netns

LO = "lo"
FAMILIES = (_socket.AF_INET, _socket.AF_INET6)  # the reference lists IPv4 first
_LO_NAME = netlink.attr(netlink.IFLA_IFNAME, LO.encode() + b"\0")


@dataclass(frozen=True)
class LoLink:
    index: int
    up: bool


class LoSocket:
    """An rtnetlink socket in one container namespace, speaking about its ``lo`` only."""

    def __init__(self, nl: netlink.NetlinkSocket, netns_path: str) -> None:
        self._nl = nl
        self.where = f'"{LO}" in network namespace "{netns_path}"'

    def _request(self, what: str, msg_type: int, payload: bytes, flags: int = 0
                 ) -> list[tuple[int, bytes]]:
        try:
            return self._nl.request(msg_type, payload, flags)
        except OSError as exc:
            raise CniError(f"cannot {what} {self.where}: {describe_errno(exc)}") from None

    def set_up(self, up: bool) -> None:
        flags = netlink.IFF_UP if up else 0
        self._request(f"set {'up' if up else 'down'}", netlink.RTM_SETLINK,
                      netlink.IFINFOMSG.pack(0, 0, 0, flags, netlink.IFF_UP) + _LO_NAME)

    def link(self) -> LoLink:
        request = netlink.IFINFOMSG.pack(0, 0, 0, 0, 0) + _LO_NAME
        for kind, body in self._request("read", netlink.RTM_GETLINK, request):
            if kind == netlink.RTM_NEWLINK:
                _family, _type, index, flags, _change = netlink.IFINFOMSG.unpack_from(body)
                return LoLink(index, bool(flags & netlink.IFF_UP))
        raise CniError(f"cannot read {self.where}: the kernel sent no answer")

    def addresses(self, link: LoLink) -> list[IPInterface]:
        """The IPv4 then the IPv6 addresses of ``lo``, each in the kernel's order (the
        reference's), from one dump of both families."""
        found: dict[int, list[IPInterface]] = {family: [] for family in FAMILIES}
        replies = self._request("list the addresses of", netlink.RTM_GETADDR,
                                netlink.IFADDRMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0),
                                netlink.NLM_F_DUMP)
        for kind, body in replies:
            family, prefixlen, _flags, _scope, index = netlink.IFADDRMSG.unpack_from(body)
            if kind != netlink.RTM_NEWADDR or index != link.index or family not in found:
                continue
            attrs = netlink.parse_attrs(body[netlink.IFADDRMSG.size:])
            raw = attrs.get(netlink.IFA_LOCAL) or attrs.get(netlink.IFA_ADDRESS)
            if raw:
                found[family].append(ip_interface((ip_address(raw), prefixlen)))
        return [a for family in FAMILIES for a in found[family]]


@contextmanager
def lo_socket(ns: NetnsHandle) -> Iterator[LoSocket]:
    with enter_netns(ns):
        nl = netlink.NetlinkSocket(netlink.NETLINK_ROUTE)
    with nl:
        yield LoSocket(nl, ns.path)

