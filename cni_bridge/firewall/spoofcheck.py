"""MAC spoof check (``macspoofchk``) in the reference plugin's nftables layout (REFERENCE.md §2.4):
frames entering the bridge from a container's host veth must carry the container's MAC."""

from __future__ import annotations

import json
from typing import Any

from cni_bridge.firewall.runner import CommandRunner, check

TABLE = "nat"  # bridge family table; name shared with the reference: must never change
BASE_CHAIN = "PREROUTING"


def _chain(container_id: str, ifname: str) -> str:
    return f"cni-br-iface-{container_id}-{ifname}"


def _comment(container_id: str, ifname: str) -> str:
    return f"macspoofchk-{container_id}-{ifname}"


def plan_add(container_id: str, ifname: str, host_veth: str, mac: str) -> str:
    chain, comment = _chain(container_id, ifname), _comment(container_id, ifname)
    return "\n".join([
        f"add table bridge {TABLE}",
        f"add chain bridge {TABLE} {BASE_CHAIN} {{ type filter hook prerouting priority -300; "
        "policy accept; }",
        f"add chain bridge {TABLE} {chain}",
        f"add chain bridge {TABLE} {chain}-mac",
        f"flush chain bridge {TABLE} {chain}",
        f"flush chain bridge {TABLE} {chain}-mac",
        f'add rule bridge {TABLE} {chain} jump {chain}-mac comment "{comment}"',
        f'add rule bridge {TABLE} {chain}-mac ether saddr {mac} return comment "{comment}"',
        f'add rule bridge {TABLE} {chain}-mac drop comment "{comment}"',
        f'add rule bridge {TABLE} {BASE_CHAIN} iifname "{host_veth}" jump {chain} '
        f'comment "{comment}"',
    ]) + "\n"


def add_spoofcheck(runner: CommandRunner, container_id: str, ifname: str, host_veth: str,
                   mac: str) -> None:
    script = plan_add(container_id, ifname, host_veth, mac)
    check(runner(["nft", "-f", "-"], input=script), f"cannot install MAC spoof check for {ifname}")


def _base_rule_handles(runner: CommandRunner, comment: str) -> list[int]:
    res = runner(["nft", "-j", "list", "chain", "bridge", TABLE, BASE_CHAIN])
    if not res.ok:
        return []  # no table or chain: nothing to remove
    doc: dict[str, Any] = json.loads(res.stdout or "{}")
    return [
        item["rule"]["handle"]
        for item in doc.get("nftables", [])
        if "rule" in item and item["rule"].get("comment") == comment
    ]


def remove_spoofcheck(runner: CommandRunner, container_id: str, ifname: str) -> None:
    """Remove the jump and both chains; anything already gone is fine."""
    chain, comment = _chain(container_id, ifname), _comment(container_id, ifname)
    lines = [f"delete rule bridge {TABLE} {BASE_CHAIN} handle {h}"
             for h in _base_rule_handles(runner, comment)]
    exists = runner(["nft", "list", "chain", "bridge", TABLE, chain]).ok
    if exists:
        lines += [f"flush chain bridge {TABLE} {chain}", f"delete chain bridge {TABLE} {chain}"]
    if runner(["nft", "list", "chain", "bridge", TABLE, f"{chain}-mac"]).ok:
        lines += [f"delete chain bridge {TABLE} {chain}-mac"]
    if lines:
        check(runner(["nft", "-f", "-"], input="\n".join(lines) + "\n"),
              f"cannot remove MAC spoof check for {ifname}")
