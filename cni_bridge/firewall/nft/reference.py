"""Cleaning up the reference plugins' nftables layouts (pure planners).

Never written, only cleaned so nothing leaks when a node changes backend. The reference bridge's
rules carry our owner tag; the reference portmap's carry the bare container ID (not scoped by
network: GC cannot attribute them and leaves them to DEL).
"""

from __future__ import annotations

from collections.abc import Collection

from cni_bridge.firewall import names
from cni_bridge.firewall.model import Owner
from cni_bridge.firewall.nft.state import Listing, Rule

REF_MASQ = ("inet", names.REF_MASQ_TABLE)
REF_HOSTPORT = (("ip", names.REF_HOSTPORT_TABLE), ("ip6", names.REF_HOSTPORT_TABLE))


def delete_rule_line(rule: Rule) -> str:
    return f"delete rule {rule.family} {rule.table} {rule.chain} handle {rule.handle}"


def plan_remove_masq(listing: Listing, owner: Owner) -> list[str]:
    return [delete_rule_line(r) for r in listing.rules
            if r.chain == names.REF_MASQ_CHAIN and r.comment is not None
            and r.comment.startswith(owner.tag_hash)]


def plan_gc_masq(listing: Listing, network: str,
                 valid_owners: Collection[Owner]) -> tuple[list[str], list[str]]:
    prefix = names.network_hash(network) + "-"
    valid = {o.tag_hash for o in valid_owners}
    doomed = [r for r in listing.rules
              if r.chain == names.REF_MASQ_CHAIN and r.comment is not None
              and r.comment.startswith(prefix) and r.comment.split(",", 1)[0] not in valid]
    return ([delete_rule_line(r) for r in doomed],
            [f"reference nft masquerade rule '{r.comment}'" for r in doomed])


def plan_remove_hostports(listing: Listing, owner: Owner) -> list[str]:
    return [delete_rule_line(r) for r in listing.rules
            if r.chain in names.REF_HOSTPORT_CHAINS and r.comment == owner.container_id]
