"""The ``cni-bridge`` command line: its argument types and its parser (commands in ``main``)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from cni_bridge.admin.agent_cmd import add_node_agent_parser
from cni_bridge.admin.install_cmd import DEFAULT_CONF_DIR, add_install_parser
from cni_bridge.admin.serve_cmd import add_serve_parser, add_server_options
from cni_bridge.deploy.defaults import DEFAULT_CACHE_DIR

PROTOCOLS = ("tcp", "udp", "sctp")


def parse_port(text: str) -> dict[str, Any]:
    """``[HOSTIP:]HOST:CONTAINER[/PROTO]`` -> a portMappings entry (HOSTIP may be ``[v6]``)."""
    usage = f"invalid port {text!r}: expected [HOSTIP:]HOST:CONTAINER[/PROTO], e.g. 8080:80/tcp"
    spec, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"{usage} (protocol one of {', '.join(PROTOCOLS)})")
    host_ip = ""
    if spec.startswith("["):
        host_ip, _, spec = spec[1:].partition("]")
        if not spec.startswith(":"):
            raise argparse.ArgumentTypeError(usage)
        spec = spec[1:]
    parts = spec.split(":")
    if len(parts) == 3 and not host_ip:
        host_ip, parts = parts[0], parts[1:]
    try:
        host, container = (int(p) for p in parts)
        if host_ip:
            ipaddress.ip_address(host_ip)
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if not (0 < host < 65536 and 0 < container < 65536):
        raise argparse.ArgumentTypeError(f"{usage} (ports are 1-65535)")
    mapping: dict[str, Any] = {"hostPort": host, "containerPort": container, "protocol": proto}
    if host_ip:
        mapping["hostIP"] = host_ip
    return mapping


def parse_valid(text: str) -> tuple[str, str]:
    cid, sep, ifname = text.partition("/")
    if not sep or not cid or not ifname:
        raise argparse.ArgumentTypeError(
            f"invalid attachment {text!r}: expected CONTAINERID/IFNAME")
    return cid, ifname


def _common(p: argparse.ArgumentParser, cache: bool = True, plugins: bool = True) -> None:
    p.add_argument("--conf-dir", default=DEFAULT_CONF_DIR, type=Path,
                   help=f"where network configurations are (default {DEFAULT_CONF_DIR})")
    if cache:
        p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, type=Path,
                       help=f"the ADD result cache (default {DEFAULT_CACHE_DIR}; a "
                       "libcni runtime keeps its own in /var/lib/cni, same format)")
    if plugins:
        p.add_argument("--plugin-dir", metavar="DIR[:DIR]",
                       help="where the plugins are (default: next to this program)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cni-bridge",
        description=(
            "CNI bridge, host-local, portmap and loopback plugins in one executable. Runtimes "
            "run it under the names 'bridge', 'host-local', 'portmap' and 'loopback'; under its "
            "own name it is this tool. Start with 'cni-bridge demo'."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the program version and the CNI versions it speaks",
                   description="Print the program version and the CNI versions it speaks.")
    p = sub.add_parser("demo", help="act out the default network in throwaway namespaces",
                       description="Create throwaway network namespaces (a node, two containers,"
                       " an outside), ADD the containers with the default network, prove that"
                       " bytes flow, DEL them and show nothing is left. Needs root; never"
                       " touches this machine's own network.")
    p.add_argument("--plugin-dir", help=argparse.SUPPRESS)
    add_install_parser(sub)
    for verb, what in (("add", "attach a network namespace to a network (runs ADD)"),
                       ("check", "check an attachment against its ADD result (runs CHECK)"),
                       ("del", "detach a network namespace from a network (runs DEL)")):
        p = sub.add_parser(verb, help=what, description=f"{what[0].upper()}{what[1:]}, "
                           "running the network's plugin list as a container runtime does.")
        p.add_argument("network", metavar="NETWORK", help="network name or conflist path")
        p.add_argument("netns", metavar="NETNS", help="namespace name (ip netns) or path")
        p.add_argument("--id", dest="container_id",
                       help="container ID (default: derived from NETNS)")
        p.add_argument("--ifname", default="eth0", help="interface in the container (eth0)")
        p.add_argument("--args", default="", metavar="K=V;...", help="CNI_ARGS")
        p.add_argument("--port", action="append", type=parse_port, default=[],
                       metavar="[HOSTIP:]HOST:CONTAINER[/PROTO]",
                       help="publish a port (repeatable), e.g. 8080:80/tcp")
        if verb == "add":
            p.add_argument("--json", action="store_true", help="print the CNI result as JSON")
        _common(p)
    p = sub.add_parser("status", help="show networks, their bridge, firewall and attachments",
                       description="Per network: readiness (CNI STATUS), bridge, firewall "
                       "backend, forwarding; per attachment: addresses, host veth, published "
                       "ports and whether its firewall rules are present.")
    p.add_argument("network", nargs="?", metavar="NETWORK", help="only this network")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_server_options(p)
    _common(p)
    p = sub.add_parser("gc", help="remove what belongs to attachments that no longer exist",
                       description="Remove the state of network namespaces that are gone; "
                       "with NETWORK, also release addresses, rules and cached results of "
                       "every attachment of NETWORK not listed with --valid (runs CNI GC).")
    p.add_argument("network", nargs="?", metavar="NETWORK",
                   help="network name or conflist path")
    p.add_argument("--valid", action="append", type=parse_valid, default=[],
                   metavar="ID/IFNAME", help="an attachment to keep (repeatable)")
    p.add_argument("--none-valid", action="store_true",
                   help="keep nothing: every attachment of the network is stale")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    _common(p)
    p = sub.add_parser("reconcile", help="put back firewall rules lost in a firewall reload",
                       description="Re-add the masquerade and port-mapping rules of every "
                       "recorded attachment (idempotent: what is present stays as it is).")
    p.add_argument("network", nargs="?", metavar="NETWORK", help="only this network")
    add_serve_parser(sub)
    add_node_agent_parser(sub)
    return parser
