"""``cni-bridge node-agent``: its options (the agent itself is imported when the command runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cni_bridge.admin.install_cmd import DEFAULT_CONF_DIR, _cidrs


class AgentError(Exception):
    """The agent cannot start or go on; the message says why."""


def add_node_agent_parser(sub: Any) -> None:
    p = sub.add_parser(
        "node-agent", help="this node's network from the Kubernetes API (run by the DaemonSet)",
        description="Lists and watches the cluster's Node objects; writes this node's conflist "
        "(10-cni-bridge.conflist) from its spec.podCIDRs, dual stack when it has two; programs "
        "a route to every other node's pod CIDR via that node's InternalIP where that address "
        "is on a directly connected network (routes marked 'proto 147'; no other route is "
        "touched); keeps both current as nodes come, go and change. No overlay: nodes on "
        "different networks need routes from the network itself. Runs until SIGTERM.")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                   help="this node's name (default: NODE_NAME)")
    p.add_argument("--kubeconfig", metavar="PATH",
                   help="kubeconfig (default: KUBECONFIG, else the pod's service account)")
    p.add_argument("--conf-dir", default=DEFAULT_CONF_DIR, type=Path,
                   help=f"where the conflist goes (default {DEFAULT_CONF_DIR})")
    p.add_argument("--cluster-cidr", action="extend", type=_cidrs("cluster CIDR"), default=[],
                   metavar="CIDR",
                   help="the cluster's pod CIDR, one per family (repeat or separate with "
                   "commas): the bridge's nonMasqueradeCIDRs. Default: per family, the smallest "
                   "prefix covering every node's pod CIDR (it may grow as nodes are added: "
                   "give it for a stable value)")
    p.add_argument("--cni-version", metavar="V", help="the conflist's cniVersion (default "
                   "1.1.0; 1.0.0 for runtimes built with libcni 1.1, such as containerd 1.6/1.7)")
    p.add_argument("--ready-file", type=Path, metavar="PATH",
                   help="exists exactly while the conflist is written and the node list synced "
                   "(for a readiness probe: test -f PATH)")
    p.add_argument("--resync-interval", type=float, default=10.0, metavar="SECONDS",
                   help="look at the routes at least this often (default 10; route and address "
                   "changes are noticed at once anyway)")
    p.add_argument("--once", action="store_true",
                   help="list the nodes, write the conflist and routes once, exit (0 when the "
                   "conflist is in place)")


def cmd_node_agent(opts: argparse.Namespace) -> int:
    from cni_bridge import diag
    from cni_bridge.node_agent.agent import AgentOptions, run, run_once
    from cni_bridge.node_agent.api import ApiClient, ApiError
    from cni_bridge.node_agent.kubeconfig import ConfigError, resolve_access

    if not opts.node_name:
        raise AgentError("no node name: pass --node-name or set NODE_NAME (in a DaemonSet: "
                         "from the downward API, spec.nodeName)")
    if opts.resync_interval <= 0:
        raise AgentError("--resync-interval must be positive")
    diag.configure(os.environ, "INFO")
    agent_opts = AgentOptions(opts.node_name, opts.conf_dir, tuple(opts.cluster_cidr),
                              opts.cni_version, opts.ready_file, opts.resync_interval)
    try:
        client = ApiClient(resolve_access(opts.kubeconfig, os.environ))
        if opts.once:
            return run_once(agent_opts, client)
        return run(agent_opts, client)
    except (ConfigError, ApiError) as exc:
        raise AgentError(str(exc)) from None
