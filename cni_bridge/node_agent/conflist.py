"""This node's conflist from its Node object: the `install --subnet` planner and writer, fed
from the API. `plan_conflist` decides (pure); `ConflistWriter` writes only when the plan changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cni_bridge.cni.result import IPNetwork
from cni_bridge.deploy.install import DEFAULT_CONF_NAME
from cni_bridge.node_agent.nodes import NodeInfo, derive_cluster_cidrs


@dataclass(frozen=True)
class ConflistPlan:

    pod_cidrs: tuple[IPNetwork, ...] = ()
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    waiting: str = ""
    derived: bool = False  # cluster_cidrs derived from the nodes' pod CIDRs


def plan_conflist(me: str, nodes: Mapping[str, NodeInfo], conflicts: Mapping[str, str],
                  cluster_cidrs: Sequence[IPNetwork],
                  derived_before: Sequence[IPNetwork] = ()) -> ConflistPlan:
    """Derived cluster CIDRs also cover what was derived before: they grow as nodes come but
    do not shrink as they go, so the conflist is not rewritten back and forth."""
    node = nodes.get(me)
    if node is None:
        return ConflistPlan(waiting=f"node {me} is not in the API's node list (check "
                            "--node-name); waiting for it, no conflist written")
    if not node.pod_cidrs:
        return ConflistPlan(waiting=f"node {me} has no pod CIDR yet (spec.podCIDRs is empty: "
                            "does kube-controller-manager run with --allocate-node-cidrs?); "
                            "waiting for it, no conflist written")
    if me in conflicts:
        return ConflistPlan(waiting=f"refusing this node's pod CIDR: {conflicts[me]}; no "
                            "conflist written until one of the two changes")
    if cluster_cidrs:
        return ConflistPlan(node.pod_cidrs, tuple(cluster_cidrs))
    versions = sorted({c.version for c in node.pod_cidrs})
    known = [*nodes.values(), NodeInfo("", tuple(derived_before))]
    return ConflistPlan(node.pod_cidrs, tuple(derive_cluster_cidrs(known, versions)),
                        derived=True)


class ConflistWriter:
    """Writes the plan's conflist when it differs from the last one written (or checked)."""

    def __init__(self, conf_dir: Path, cni_version: str | None) -> None:
        self.path = conf_dir / DEFAULT_CONF_NAME
        self.conf_dir = conf_dir
        self.cni_version = cni_version
        self.current: ConflistPlan | None = None

    def ensure(self, plan: ConflistPlan) -> str:
        """"written", "replaced", "unchanged" or "same"; InstallError when refused."""
        from cni_bridge.deploy.node_conf import prepare_node_conf, write_conflist

        if plan == self.current and self.path.exists():
            return "same"
        conf = prepare_node_conf(plan.pod_cidrs, plan.cluster_cidrs, self.cni_version,
                                 self.conf_dir)
        outcome = write_conflist(self.path, conf)
        self.current = plan
        return outcome

    def derived_before(self) -> tuple[IPNetwork, ...]:
        current = self.current
        return current.cluster_cidrs if current is not None and current.derived else ()

    def ensure_described(self, plan: ConflistPlan) -> str:
        """`ensure`, and the log line for what it did ("" when nothing)."""
        before = self.current
        outcome = self.ensure(plan)
        if outcome == "same":
            return ""
        text = (f"conflist {self.path} {outcome}: pod CIDRs "
                f"{', '.join(map(str, plan.pod_cidrs))}; nonMasqueradeCIDRs "
                f"{', '.join(map(str, plan.cluster_cidrs))}")
        if plan.derived:
            text += " (derived from the nodes' pod CIDRs; --cluster-cidr fixes it)"
        if outcome == "replaced" and (before is None or before.pod_cidrs != plan.pod_cidrs):
            text += (". If the pod CIDR changed, the bridge keeps its old gateway address: the "
                     "next ADD names it and says how to remove it")
        return text
