"""Text for people: aligned tables, and a network's status as ``cni-bridge status`` prints it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cni_bridge.admin.examine import NetworkStatus
    from cni_bridge.node.state import Survey


def table(rows: Sequence[Sequence[str]], indent: int = 4) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [" " * indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def format_status(st: NetworkStatus) -> list[str]:
    lines = [f"network {st.name}" + (f"   {st.path}" if st.path else "")
             + f" (cniVersion {st.cni_version})"]
    lines.append(f"  ready        {st.ready}")
    if st.bridge:
        addrs = ", ".join(st.bridge_addresses)
        lines.append(f"  bridge       {st.bridge}: {st.bridge_state}" + (f", {addrs}" if addrs
                                                                         else ""))
    if st.subnets:
        lines.append(f"  subnets      {', '.join(st.subnets)}")
    lines.append(f"  firewall     {st.backend}")
    lines.append("  forwarding   " + ", ".join(f"{k} {v}" for k, v in st.forwarding.items()))
    lines.append(f"  attachments  {len(st.attachments) or 'none'}")
    if st.attachments:
        rows = [("CONTAINER", "IFNAME", "ADDRESSES", "HOST VETH", "PORTS", "RULES")]
        rows += [(a.container_id, a.ifname, ", ".join(a.addresses) or "-", a.host_veth or "-",
                  ", ".join(a.ports) or "-", a.rules) for a in st.attachments]
        lines += table(rows)
    return lines


def format_node_state(survey: Survey) -> str:
    """What ``status`` and ``gc`` say about the state of other namespaces (nothing when none)."""
    lines = []
    titles = ((survey.dead, "stale state of {} dead namespace{} ('cni-bridge gc' removes it):"),
              (survey.unproven, "state of {} namespace{} not provably dead, left alone:"))
    for found, title in titles:
        if found:
            lines.append("\n" + title.format(len(found), "s" if len(found) != 1 else ""))
            lines += [f"  {f.path}: {f.why} ({f.owner})" for f in found]
    return "".join(line + "\n" for line in lines)
