"""Bridges: create-or-confirm, bridge-port flags (hairpin, isolated), port VLANs."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import Any

from cni_bridge.cni.errors import CniError
from cni_bridge.net._parse import (
    BRIDGE_VLAN_INFO_PVID,
    BRIDGE_VLAN_INFO_RANGE_BEGIN,
    BRIDGE_VLAN_INFO_RANGE_END,
    BRIDGE_VLAN_INFO_UNTAGGED,
    parse_bridge_vlans,
)
from cni_bridge.net.errors import NetlinkOpError
from cni_bridge.net.links import (
    LinkRef,
    describe,
    find_link,
    index_of,
    link_msg,
    set_link_up,
    set_promisc,
)
from cni_bridge.net.model import (
    IFF_PROMISC,
    IFF_UP,
    BridgePortFlags,
    BridgeSpec,
    BridgeVlan,
    LinkInfo,
)
from cni_bridge.net.netlink import Netlink
from cni_bridge.netlink import (
    NLA_F_NESTED,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    RTM_SETLINK,
)

AF_BRIDGE = getattr(socket, "AF_BRIDGE", 7)
RTEXT_FILTER_BRVLAN = 1 << 1
_ENSURE_ATTEMPTS = 5


def ensure_bridge(nl: Netlink, spec: BridgeSpec) -> LinkInfo:
    """Create the bridge (up, with ``spec``'s MTU and vlan_filtering) or confirm an existing one
    (EEXIST: a concurrent creator won). An existing bridge keeps its MTU and vlan_filtering; it
    is set up (and promiscuous when ``spec.promisc``) if it is not yet."""
    for _ in range(_ENSURE_ATTEMPTS):
        if _create_bridge(nl, spec):
            created = find_link(nl, spec.name)
            if created is not None:
                return created
            continue  # deleted again at once by someone else: start over
        existing = find_link(nl, spec.name)
        if existing is not None:
            return _confirm_bridge(nl, spec, existing)
    raise NetlinkOpError(
        f'cannot create bridge "{spec.name}": it keeps appearing and disappearing',
        errno=errno.EAGAIN,
    )


def _create_bridge(nl: Netlink, spec: BridgeSpec) -> bool:
    info: list[Any] = [("IFLA_INFO_KIND", "bridge")]
    if spec.vlan_filtering:
        info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_VLAN_FILTERING", 1)]}))
    msg = link_msg(nl, spec.name)
    msg["attrs"].append(("IFLA_LINKINFO", {"attrs": info}))
    if spec.mtu:
        msg["attrs"].append(("IFLA_MTU", spec.mtu))
    msg["flags"] = IFF_UP | (IFF_PROMISC if spec.promisc else 0)
    msg["change"] = msg["flags"]
    what = f'cannot create bridge "{spec.name}"'
    if spec.vlan_filtering:
        what += " with vlan_filtering"
    try:
        replies = nl.call(
            what, msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, tolerate=(errno.EEXIST,)
        )
    except NetlinkOpError as exc:
        if exc.errno == errno.EOPNOTSUPP and spec.vlan_filtering and not exc.details:
            exc.details = "the kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)"
        raise
    return replies is not None


def _confirm_bridge(nl: Netlink, spec: BridgeSpec, link: LinkInfo) -> LinkInfo:
    if link.kind != "bridge":
        raise CniError(f'"{spec.name}" already exists but is not a bridge')
    changed = False
    if spec.promisc and not link.promisc:
        set_promisc(nl, link, True)
        changed = True
    if not link.is_up:
        set_link_up(nl, link)
        changed = True
    if not changed:
        return link
    return find_link(nl, link.index) or link


def set_bridge_port_flags(nl: Netlink, port: LinkRef, flags: BridgePortFlags) -> None:
    """Set the hairpin / isolated flags of a bridge port (IFLA_BRPORT_MODE / _ISOLATED)."""
    values: list[Any] = []
    if flags.hairpin is not None:
        values.append(("IFLA_BRPORT_MODE", int(flags.hairpin)))
    if flags.isolated is not None:
        values.append(("IFLA_BRPORT_ISOLATED", int(flags.isolated)))
    if not values:
        return
    msg = link_msg(nl, index_of(nl, port), family=AF_BRIDGE)
    msg["attrs"].append(("IFLA_PROTINFO", {"attrs": values}, NLA_F_NESTED))
    nl.call(f"cannot set bridge port flags on {describe(port)}", msg, RTM_SETLINK)


def vlan_infos(vlans: Sequence[BridgeVlan]) -> list[dict[str, int]]:
    """IFLA_BRIDGE_VLAN_INFO entries for ``vlans`` (a range becomes a BEGIN/END pair)."""
    infos = []
    for vlan in vlans:
        flags = (BRIDGE_VLAN_INFO_PVID if vlan.pvid else 0) | (
            BRIDGE_VLAN_INFO_UNTAGGED if vlan.untagged else 0
        )
        if vlan.vid_end is None or vlan.vid_end == vlan.vid:
            infos.append({"flags": flags, "vid": vlan.vid})
        else:
            infos.append({"flags": flags | BRIDGE_VLAN_INFO_RANGE_BEGIN, "vid": vlan.vid})
            infos.append({"flags": flags | BRIDGE_VLAN_INFO_RANGE_END, "vid": vlan.vid_end})
    return infos


def _vlan_msg(nl: Netlink, port: LinkRef, vlans: Sequence[BridgeVlan]) -> Any:
    msg = link_msg(nl, index_of(nl, port), family=AF_BRIDGE)
    entries = [("IFLA_BRIDGE_VLAN_INFO", info) for info in vlan_infos(vlans)]
    msg["attrs"].append(("IFLA_AF_SPEC", {"attrs": entries}))
    return msg


def _describe_vlans(vlans: Sequence[BridgeVlan]) -> str:
    return ",".join(
        str(v.vid) if v.vid_end in (None, v.vid) else f"{v.vid}-{v.vid_end}" for v in vlans
    )


def add_bridge_vlans(nl: Netlink, port: LinkRef, vlans: Sequence[BridgeVlan]) -> None:
    """Add VLANs (with their pvid/untagged flags) to a bridge port, in one request."""
    if vlans:
        what = f"cannot add VLAN {_describe_vlans(vlans)} to bridge port {describe(port)}"
        nl.call(what, _vlan_msg(nl, port, vlans), RTM_SETLINK)


def remove_bridge_vlans(nl: Netlink, port: LinkRef, vlans: Sequence[BridgeVlan]) -> None:
    """Remove VLANs from a bridge port; VLANs it does not carry are not an error."""
    for vlan in vlans:  # one by one, so that one VLAN already gone does not stop the others
        what = f"cannot remove VLAN {_describe_vlans([vlan])} from bridge port {describe(port)}"
        # RTM_DELLINK with family AF_BRIDGE is "delete VLAN", never "delete link".
        nl.call(what, _vlan_msg(nl, port, [vlan]), RTM_DELLINK, tolerate=(errno.ENOENT,))


def get_bridge_vlans(nl: Netlink, port: LinkRef) -> list[BridgeVlan]:
    """The VLANs configured on a bridge port (empty without VLAN filtering support)."""
    index = index_of(nl, port)
    msg = link_msg(nl, family=AF_BRIDGE)
    msg["attrs"].append(("IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN))
    what = f"cannot list VLANs of bridge port {describe(port)}"
    replies = nl.call(what, msg, RTM_GETLINK, NLM_F_DUMP) or []
    for reply in replies:
        if reply["index"] == index:
            return parse_bridge_vlans(reply)
    return []
