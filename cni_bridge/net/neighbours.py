"""Neighbour (ARP / NDP) entries: drop a stale one when an address is reused."""

from __future__ import annotations

import errno

from cni_bridge.net.addresses import family_of
from cni_bridge.net.errors import LinkNotFound
from cni_bridge.net.links import LinkRef, describe, index_of
from cni_bridge.net.model import IPAddress
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import RTM_DELNEIGH


def remove_neighbour(nl: Netlink, link: LinkRef, address: IPAddress) -> bool:
    """Delete the neighbour entry for ``address`` on ``link``; False if there was none.

    Used on ADD when a container IP is reused: the host would otherwise keep sending to the old
    container's MAC until the stale entry times out.
    """
    try:
        index = index_of(nl, link)
    except LinkNotFound:
        return False
    msg = nl.codec.ndmsg()
    msg["family"] = family_of(address.version)
    msg["ifindex"] = index
    msg["attrs"] = [("NDA_DST", str(address))]
    what = f"cannot remove neighbour entry {address} on {describe(link)}"
    replies = nl.call(what, msg, RTM_DELNEIGH, tolerate=(errno.ENOENT, errno.ENODEV))
    return replies is not None
