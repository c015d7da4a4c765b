"""``cni-bridge``: the command-line tool for people (the plugins run under their own names).
Output is for people, ``--json`` for programs. Exit status: 0 success, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from cni_bridge import __version__
from cni_bridge.admin.agent_cmd import AgentError, cmd_node_agent
from cni_bridge.admin.install_cmd import cmd_install
from cni_bridge.admin.parser import build_parser
from cni_bridge.admin.serve_cmd import ServeError, cmd_serve
from cni_bridge.cni.versions import SUPPORTED_VERSIONS

if TYPE_CHECKING:  # imported where used: `version` and `--help` stay fast
    from cni_bridge.admin.examine import AttachmentState
    from cni_bridge.admin.runtime import Attachment, Runtime

NO_STATE = "/nonexistent/cni-bridge-state"  # read in place of a directory not proven ours
NEXT_STEP = {
    3: "the container is unknown: check the container ID and --ifname used at ADD",
    7: "fix the network configuration (the message names the field)",
    11: "a lock or resource was busy: try again",
    50: "the plugin cannot serve ADD: see 'cni-bridge status' for what is missing",
}


class UserError(Exception):
    """A failure the user can act on; printed without a traceback."""


def netns_path(name: str) -> str:
    """A namespace name (as in 'ip netns') or a path."""
    return name if "/" in name else f"/run/netns/{name}"


def default_container_id(netns: str) -> str:
    return "cni-bridge-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


def make_runtime(opts: argparse.Namespace) -> Runtime:
    from cni_bridge.admin.runtime import Runtime
    from cni_bridge.deploy.install import default_plugin_dir

    dirs = opts.plugin_dir.split(":") if opts.plugin_dir else [str(default_plugin_dir())]
    return Runtime(dirs, opts.cache_dir)


def cmd_demo(opts: argparse.Namespace) -> int:
    from cni_bridge.admin import demo

    return demo.main(Path(opts.plugin_dir) if opts.plugin_dir else None)


def _attachment(opts: argparse.Namespace) -> Attachment:
    from cni_bridge.admin.runtime import Attachment

    path = netns_path(opts.netns)
    caps = {"portMappings": opts.port} if opts.port else {}
    return Attachment(opts.container_id or default_container_id(path), opts.ifname, path,
                      opts.args, caps)


def cmd_attach(opts: argparse.Namespace) -> int:
    from cni_bridge.admin.examine import host_veth
    from cni_bridge.deploy.confdir import NetworkConf, find_network

    conf: NetworkConf = find_network(opts.conf_dir, opts.network)
    runtime, att = make_runtime(opts), _attachment(opts)
    who = f"{att.container_id}/{att.ifname}"
    if opts.command == "check":
        runtime.check(conf.net, att)
        print(f"ok: {who} on network {conf.net.name} matches its ADD result")
        return 0
    if opts.command == "del":
        runtime.delete(conf.net, att)
        print(f"deleted {who} from network {conf.net.name}")
        return 0
    result = runtime.add(conf.net, att)
    if opts.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"added {who} to network {conf.net.name} (netns {att.netns})")
    for ip in result.get("ips", []):
        print(f"  address   {ip['address']}" + (f" gateway {ip['gateway']}"
                                                if ip.get("gateway") else ""))
    veth = host_veth(result, conf.bridge)
    if veth:
        print(f"  host      {veth} on {conf.bridge}")
    for route in result.get("routes", []):
        print(f"  route     {route['dst']}" + (f" via {route['gw']}" if route.get("gw") else ""))
    from cni_bridge.admin.examine import describe_mapping

    for mapping in opts.port:
        print(f"  port      {describe_mapping(mapping)}")
    print(f"  undo with cni-bridge del {opts.network} {opts.netns} --id {att.container_id}"
          + (f" --ifname {att.ifname}" if att.ifname != "eth0" else ""))
    return 0


def cmd_status(opts: argparse.Namespace) -> int:
    from cni_bridge.admin.examine import network_status
    from cni_bridge.admin.report import format_node_state, format_status
    from cni_bridge.deploy.confdir import find_network, load_conf_dir
    from cni_bridge.node import records
    from cni_bridge.node import state as nodestate
    from cni_bridge.serve.client import query

    if opts.server:
        return query.print_server(opts.socket, opts.json)
    if opts.network:
        confs, problems = [find_network(opts.conf_dir, opts.network)], list[str]()
    else:
        confs, problems = load_conf_dir(opts.conf_dir)
    if not confs:
        raise UserError(f"no network configuration in {opts.conf_dir}; write the default one "
                        "with 'cni-bridge install --with-conf', or pass --conf-dir DIR")
    stale = nodestate.survey(records.state_base())  # before a plugin call could claim any
    runtime, root = make_runtime(opts), Path(records.proven_root() or NO_STATE)
    answer = None if opts.no_server else query.ask_socket(opts.socket)
    server = answer if answer is not None and query.watches(answer, root) else None
    # With a server, the rules come from its last check instead of a check per attachment.
    statuses = [network_status(conf, runtime, root, check_rules=server is None)
                for conf in confs]
    if server is not None:
        query.apply(statuses, server)
    if opts.json:
        print(json.dumps({"networks": [asdict(s) for s in statuses], "skipped": problems,
                          "server": server, "node_state": asdict(stale)}, indent=2))
    else:
        for i, st in enumerate(statuses):
            print("\n".join(([""] if i else []) + format_status(st)))
        for problem in problems:
            print(f"skipped {problem}")
        print(format_node_state(stale), end="")
        if server is not None:
            print("\n" + "\n".join(query.format_server(server)))
    # Exit 0 only when every network can serve ADD, so scripts can use it as a readiness probe.
    return 0 if all(s.ready == "yes" for s in statuses) else 1


def describe_removal(att: AttachmentState) -> str:
    parts = []
    if att.addresses:
        parts.append(f"release {', '.join(att.addresses)}")
    if "cache" in att.sources:
        parts.append("DEL through the plugins (cached ADD result)")
    if "record" in att.sources:
        parts.append("remove its firewall rules" + (f" ({', '.join(att.ports)})"
                                                    if att.ports else ""))
    return "; ".join(parts) or "nothing recorded"


def cmd_gc(opts: argparse.Namespace) -> int:
    if opts.network is None:
        return 0 if gc_node_state(opts.dry_run) else 1
    from cni_bridge.admin.examine import gc_candidates
    from cni_bridge.deploy.confdir import find_network
    from cni_bridge.node import records

    if not opts.valid and not opts.none_valid:
        raise UserError("say which attachments are still in use with --valid ID/IFNAME "
                        "(repeatable), or --none-valid to remove every attachment of "
                        f"{opts.network}; add --dry-run to see the effect first")
    conf = find_network(opts.conf_dir, opts.network)
    node_ok = gc_node_state(opts.dry_run)
    owned = records.proven_root() if opts.dry_run else records.state_root()
    runtime, root = make_runtime(opts), Path(owned or NO_STATE)
    stale = gc_candidates(conf, runtime, root, opts.valid)
    keeping = ", ".join(f"{c}/{i}" for c, i in opts.valid) or "nothing"
    mode = " (dry run: nothing is changed)" if opts.dry_run else ""
    print(f"gc of network {conf.net.name}, keeping {keeping}{mode}")
    verb = "would remove" if opts.dry_run else "removing"
    for att in stale:
        print(f"  {verb} {att.container_id}/{att.ifname}: {describe_removal(att)}")
    if not stale:
        print("  nothing is stale" + ("" if opts.dry_run else "; the plugins' GC runs anyway "
                                      "(rules without a record)"))
    if opts.dry_run:
        return 0
    errors = runtime.gc(conf.net, opts.valid)
    for exc in errors:
        print(f"  error: {exc}", file=sys.stderr)
    left = gc_candidates(conf, runtime, root, opts.valid)
    for att in left:
        print(f"  still there: {att.container_id}/{att.ifname}: {describe_removal(att)}")
    ok = node_ok and not errors and not left
    print("done" if ok else "gc finished with problems (see above)")
    return 0 if ok else 1


def gc_node_state(dry_run: bool) -> bool:
    """Remove (`dry_run`: name) dead namespaces' state; False when some could not be removed."""
    from cni_bridge.admin.report import format_node_state
    from cni_bridge.node import records
    from cni_bridge.node import state as nodestate

    base = records.state_base()
    print(f"gc of the state of network namespaces that are gone, under {base}"
          + (" (dry run: nothing is changed)" if dry_run else ""))
    report = nodestate.survey(base) if dry_run else nodestate.sweep(base)
    gone = [f for f in report.dead if dry_run or f.path in report.removed]
    for found in gone:
        print(f"  {'would remove' if dry_run else 'removed'} {found.path}: its namespace is gone "
              f"({found.why})")
    if not gone:
        print("  nothing is stale")
    if dry_run:
        return True
    left = nodestate.survey(base)
    print(format_node_state(left), end="")
    return not left.dead


def cmd_reconcile(opts: argparse.Namespace) -> int:
    from cni_bridge.admin.examine import reconcile
    from cni_bridge.node import records

    owned = records.proven_root()
    scope = f"network {opts.network}" if opts.network else "all networks"
    items = reconcile(Path(owned), opts.network) if owned else []
    if not items:
        where = owned or records.namespace_dir()
        foreign = not owned and os.path.lexists(where)
        note = "; what is there is not this namespace's: see 'cni-bridge status'" if foreign \
            else ""
        print(f"reconcile ({scope}): no attachment records under {where}; nothing to restore "
              f"(the plugins write a record on every ADD{note})")
        return 0
    restored = sum(1 for i in items if i.missing_before and not i.error)
    print(f"reconcile ({scope}): {len(items)} record(s), {restored} restored")
    rows = [("NETWORK", "CONTAINER", "IFNAME", "RULES", "BACKEND", "OUTCOME")]
    for i in items:
        outcome = (f"error: {i.error}" if i.error else
                   f"restored ({'; '.join(i.missing_before)})" if i.missing_before else "present")
        what = "masquerade" if i.plugin == "bridge" else "ports" if i.plugin == "portmap" \
            else i.plugin
        rows.append((i.network, i.container_id, i.ifname, what, i.backend, outcome))
    from cni_bridge.admin.report import table

    print("\n".join(table(rows, 2)))
    return 1 if any(i.error for i in items) else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo, "install": cmd_install, "add": cmd_attach, "check": cmd_attach,
    "del": cmd_attach, "status": cmd_status, "gc": cmd_gc, "reconcile": cmd_reconcile,
    "serve": cmd_serve, "node-agent": cmd_node_agent,
}


def report_error(command: str, exc: Exception) -> None:
    from cni_bridge.admin.runtime import PluginError

    print(f"cni-bridge {command}: {exc}", file=sys.stderr)
    for note in getattr(exc, "__notes__", []):
        print(f"  {note}", file=sys.stderr)
    if isinstance(exc, PluginError):
        if exc.stderr.strip():
            print("  plugin log:\n    " + exc.stderr.strip().replace("\n", "\n    "),
                  file=sys.stderr)
        hint = NEXT_STEP.get(exc.code)
        if hint:
            print(f"  next: {hint}", file=sys.stderr)


def main(args: list[str]) -> int:
    if args[:1] == ["_echo"]:  # hidden helper of the demo
        from cni_bridge.admin import demo_echo

        return demo_echo.main(args[1:])
    parser = build_parser()
    opts = parser.parse_args(args)
    if opts.command == "version":
        print(f"cni-bridge {__version__}")
        print(f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}")
        return 0
    if opts.command is None:
        parser.print_help()
        return 0
    from cni_bridge.admin.runtime import PluginError
    from cni_bridge.cni.errors import CniError
    from cni_bridge.deploy.confdir import ConflistError
    from cni_bridge.deploy.install import InstallError

    try:
        return COMMANDS[opts.command](opts)
    except (UserError, ConflistError, PluginError, InstallError, ServeError, AgentError,
            CniError, OSError) as exc:
        report_error(opts.command, exc)
        return 1
    except KeyboardInterrupt:
        print(f"cni-bridge {opts.command}: interrupted", file=sys.stderr)
        return 130
