"""``cni-bridge install --subnet CIDR``: the default network with host-local handing out the
node's pod CIDR and, with ``--cluster-cidr``, ``nonMasqueradeCIDRs`` set to the cluster CIDR (pods
on other nodes see a pod's own address; traffic leaving the cluster is still masqueraded).
Everything is checked before the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni_bridge.bridge.config import NON_MASQUERADE_KEY, loose_network
from cni_bridge.cni.result import IPNetwork
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST
from cni_bridge.deploy.install import (
    DEFAULT_CONF_NAME,
    InstallError,
    check_writable,
    fsync_dir,
    synced_temp_file,
)


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    # the version test makes both one family (subnet_of raises TypeError across families)
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def parse_cidr(text: str, what: str = "pod CIDR") -> IPNetwork:
    """One network such as ``10.244.1.0/24`` (host bits clear); the error names the value."""
    text = text.strip()
    if not text:
        raise ValueError(f"missing {what}: the value is empty (give the node's {what} such as "
                         "10.244.1.0/24)")
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        loose = loose_network(text)
    if not loose:
        raise ValueError(f"invalid {what} {text!r}: expected a network such as 10.244.1.0/24")
    raise ValueError(f"invalid {what} {text!r}: host bits are set; did you mean {loose}?")


def parse_cidr_list(values: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    """Repeated options, each possibly a comma-separated list (``10.244.1.0/24,fd00:1::/64``)."""
    return tuple(parse_cidr(part, what) for value in values for part in value.split(","))


@dataclass(frozen=True)
class NodeNetwork:
    subnets: tuple[IPNetwork, ...]  # the node's pod CIDRs, at most one per family
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    cni_version: str = str(DEFAULT_CONFLIST["cniVersion"])


def plan_node_network(subnets: Sequence[IPNetwork], cluster_cidrs: Sequence[IPNetwork],
                      cni_version: str | None = None) -> NodeNetwork:
    """Validate the pod and cluster CIDRs against each other (pure)."""
    if not subnets:
        raise InstallError("missing pod CIDR: pass the node's pod CIDR with --subnet")
    for version in (4, 6):
        mine = [s for s in subnets if s.version == version]
        if len(mine) > 1:
            raise InstallError(f"pod CIDRs {mine[0]} and {mine[1]} are both IPv{version}: a "
                                "node has one pod CIDR per family")
        cluster = [c for c in cluster_cidrs if c.version == version]
        if mine and cluster and not any(_inside(mine[0], c) for c in cluster):
            raise InstallError(
                f"pod CIDR {mine[0]} is not inside the cluster CIDR "
                f"{', '.join(map(str, cluster))}: each node's pod CIDR is a part of it")
    for cidr in cluster_cidrs:
        if not any(s.version == cidr.version for s in subnets):
            raise InstallError(f"cluster CIDR {cidr} has no pod CIDR of its family "
                                f"(IPv{cidr.version}) on this node")
    return NodeNetwork(tuple(subnets), tuple(dict.fromkeys(cluster_cidrs)),
                       cni_version or NodeNetwork.cni_version)


def node_conflist(node: NodeNetwork) -> dict[str, Any]:
    """The default network with the node's pod CIDRs (one range set per family)."""
    conf = copy.deepcopy(DEFAULT_CONFLIST)
    conf["cniVersion"] = node.cni_version
    bridge = conf["plugins"][0]
    bridge["ipam"]["ranges"] = [[{"subnet": str(s)}] for s in node.subnets]
    if node.cluster_cidrs:
        bridge[NON_MASQUERADE_KEY] = [str(c) for c in node.cluster_cidrs]
    return conf


def find_overlaps(node: NodeNetwork, taken: Iterable[tuple[str, IPNetwork]]) -> list[str]:
    """Each pod CIDR that overlaps a network already in use, named with its user (pure)."""
    return [f"pod CIDR {subnet} overlaps {net} of {who}"
            for subnet in node.subnets for who, net in taken
            if net.version == subnet.version and net.overlaps(subnet)]


def networks_in_conf_dir(conf_dir: Path, skip: Path) -> list[tuple[str, IPNetwork]]:
    """The subnets of every other network configured in `conf_dir`."""
    from cni_bridge.deploy.confdir import load_conf_dir

    found: list[tuple[str, IPNetwork]] = []
    for conf in load_conf_dir(conf_dir)[0]:
        if conf.path is None or conf.path.name == skip.name:
            continue
        for text in conf.subnets:
            try:
                found.append((f"network {conf.net.name} in {conf.path}",
                              ipaddress.ip_network(text, strict=False)))
            except ValueError:
                continue
    return found


def networks_on_node(bridge: str) -> list[tuple[str, IPNetwork]]:
    """This namespace's global addresses' networks, except on our bridge (ADD reports those)."""
    from cni_bridge.net.addresses import list_addresses
    from cni_bridge.net.links import list_links
    from cni_bridge.net.netlink import Netlink

    with Netlink.for_current() as nl:
        names = {link.index: link.name for link in list_links(nl)}
        return [(f"address {a.interface} on {names.get(a.index, a.index)}", a.interface.network)
                for a in list_addresses(nl) if a.scope == 0 and names.get(a.index) != bridge]


def prepare_node_conf(subnets: Sequence[IPNetwork], cluster_cidrs: Sequence[IPNetwork],
                      cni_version: str | None, conf_dir: Path) -> dict[str, Any]:
    """The node's conflist, once the CIDRs agree, overlap nothing on the node or in `conf_dir`,
    and `conf_dir` is writable."""
    try:
        node = plan_node_network(subnets, cluster_cidrs, cni_version)
    except InstallError as exc:
        raise InstallError(f"{exc}; nothing was installed") from None
    conf = node_conflist(node)
    taken = networks_in_conf_dir(conf_dir, Path(DEFAULT_CONF_NAME))
    taken += networks_on_node(str(conf["plugins"][0]["bridge"]))
    overlaps = find_overlaps(node, taken)
    if overlaps:
        raise InstallError("; ".join(overlaps) + ": choose a pod CIDR no other network uses; "
                           "nothing was installed")
    check_writable(conf_dir)
    return conf


def write_conflist(path: Path, conf: dict[str, Any]) -> str:
    """Write `conf` to `path` atomically; returns "written", "replaced" or "unchanged"."""
    text = json.dumps(conf, indent=2) + "\n"
    try:
        if path.read_text() == text:
            return "unchanged"
        outcome = "replaced"
    except FileNotFoundError:
        outcome = "written"
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = synced_temp_file(path.parent, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return outcome
