"""The loopback plugin, as the reference's ``loopback`` behaves (REFERENCE: plugins/main/loopback).

ADD returns the prevResult when there is one, else ``lo`` with its first IPv4 and IPv6 address
in the 1.x shape; a non-loopback address on ``lo`` fails it. DEL of a namespace that is gone
succeeds. The plugin's own namespace and the machine's are refused (code 8), as the bridge
refuses them: DEL would otherwise take the host's ``lo`` down.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Interface

from cni_bridge.cni.errors import CniError
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import Interface, IPConfig, IPInterface, Result, UnconvertedResult
from cni_bridge.loopback.lo import LO, lo_socket
from cni_bridge.net.errors import NetnsNotFound
from cni_bridge.net.netns import NetnsHandle, open_netns, refuse_host_netns

LO_MAC = "00:00:00:00:00:00"


def is_loopback(address: IPInterface) -> bool:
    """Go's ``net.IP.IsLoopback``: 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6."""
    if isinstance(address, IPv6Interface) and address.ip.ipv4_mapped is not None:
        return address.ip.ipv4_mapped.is_loopback
    return address.ip.is_loopback


def plan_result(sandbox: str, addresses: Sequence[IPInterface]) -> Result:
    """``lo`` with its first address of each family (pure)."""
    for address in addresses:
        if not is_loopback(address):
            raise CniError(f'loopback interface found with non-loopback address "{address.ip}"',
                           f"in network namespace {sandbox}")
    firsts = [next((a for a in addresses if a.version == v), None) for v in (4, 6)]
    return UnconvertedResult(
        interfaces=(Interface(LO, mac=LO_MAC, sandbox=sandbox),),
        ips=tuple(IPConfig(address=a, interface=0) for a in firsts if a is not None),
    )


def container_netns(path: str) -> NetnsHandle:
    refuse_host_netns(path)
    return open_netns(path)


class LoopbackPlugin:
    def add(self, req: Request) -> Result:
        with container_netns(req.env.netns) as ns, lo_socket(ns) as lo:
            lo.set_up(True)
            link = lo.link()
            addresses = lo.addresses(link)
        result = plan_result(req.env.netns, addresses)
        return req.prev_result if req.prev_result is not None else result

    def delete(self, req: Request) -> None:
        if not req.env.netns:
            return
        try:
            ns = container_netns(req.env.netns)
        except NetnsNotFound:
            return  # the container is gone, and its lo with it
        with ns, lo_socket(ns) as lo:
            lo.set_up(False)

    def check(self, req: Request) -> None:
        with container_netns(req.env.netns) as ns, lo_socket(ns) as lo:
            if not lo.link().up:
                raise CniError("loopback interface is down", lo.where)

    def gc(self, req: Request) -> None:
        """Nothing to collect: the plugin leaves no state on the node."""

    def status(self, req: Request) -> None:
        """Always ready: ``lo`` needs nothing from the node."""
