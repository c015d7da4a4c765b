"""The container's ``lo``: set it up or down, read its state and addresses.

Three rtnetlink messages, packed with the standard library (``cni_bridge.rawnetlink``) as
portmap's route lookup is: the netlink layer's codec (pyroute2's message classes) would cost a
loopback call more in imports than all of its kernel work. The socket is opened with the thread
briefly in the container's namespace (``enter_netns``) and stays bound to it afterwards.
"""

from __future__ import annotations

import _socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import IPInterface
from cni_bridge.net.errors import describe_errno
from cni_bridge.net.netns import NetnsHandle, enter_netns
from cni_bridge.rawnetlink import NETLINK_ROUTE, NLM_F_DUMP, RawNetlink, attr, parse_attrs

LO = "lo"
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19
RTM_NEWADDR, RTM_GETADDR = 20, 22
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
FAMILIES = (_socket.AF_INET, _socket.AF_INET6)  # the reference lists IPv4 first
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_LO_NAME = attr(IFLA_IFNAME, LO.encode() + b"\0")


@dataclass(frozen=True)
class LoLink:
    index: int
    up: bool


class LoSocket:
    """An rtnetlink socket in one container namespace, speaking about its ``lo`` only."""

    def __init__(self, nl: RawNetlink, netns_path: str) -> None:
        self._nl = nl
        self.where = f'"{LO}" in network namespace "{netns_path}"'

    def _request(self, what: str, msg_type: int, payload: bytes, flags: int = 0
                 ) -> list[tuple[int, bytes]]:
        try:
            return self._nl.request(msg_type, payload, flags)
        except OSError as exc:
            raise CniError(f"cannot {what} {self.where}: {describe_errno(exc)}") from None

    def set_up(self, up: bool) -> None:
        flags = IFF_UP if up else 0
        self._request(f"set {'up' if up else 'down'}", RTM_SETLINK,
                      _IFINFOMSG.pack(0, 0, 0, flags, IFF_UP) + _LO_NAME)

    def link(self) -> LoLink:
        for kind, body in self._request("read", RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0)
                                        + _LO_NAME):
            if kind == RTM_NEWLINK:
                _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
                return LoLink(index, bool(flags & IFF_UP))
        raise CniError(f"cannot read {self.where}: the kernel sent no answer")

    def addresses(self, link: LoLink, family: int) -> list[IPInterface]:
        """The addresses of ``lo`` of one family, in the kernel's order (the reference's)."""
        found: list[IPInterface] = []
        replies = self._request("list the addresses of", RTM_GETADDR,
                                _IFADDRMSG.pack(family, 0, 0, 0, 0), NLM_F_DUMP)
        for kind, body in replies:
            family_, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
            if kind != RTM_NEWADDR or index != link.index or family_ != family:
                continue
            attrs = parse_attrs(body[_IFADDRMSG.size:])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                found.append(ip_interface((ip_address(raw), prefixlen)))
        return found


@contextmanager
def lo_socket(ns: NetnsHandle) -> Iterator[LoSocket]:
    with enter_netns(ns):
        nl = RawNetlink(NETLINK_ROUTE)
    with nl:
        yield LoSocket(nl, ns.path)

