"""The resident server's command line: ``cni-bridge serve`` and the ``--socket``/``--server``
options of ``cni-bridge status``."""

from __future__ import annotations

import argparse
from typing import Any

from cni_bridge.serve.server.listener import ServeError as ServeError  # raised here too
from cni_bridge.serve.wire import DEFAULT_SOCKET


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run plugin calls for the executables (resident mode)",
                       description="Resident mode: plugins of this build hand their calls to "
                       "this server instead of running them (same results, less start-up), "
                       "and it restores recorded firewall rules after a firewall reload. "
                       "Runs until SIGTERM or SIGINT.")
    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"where to listen (default {DEFAULT_SOCKET}; plugins look there, or "
                   "at CNI_BRIDGE_SOCKET)")
    p.add_argument("--max-workers", type=int, default=32, metavar="N",
                   help="calls run at once; more wait, then run standalone (default 32)")
    p.add_argument("--spare-workers", type=int, default=2, metavar="N",
                   help="workers forked in advance while no call runs, so that a call does not "
                   "wait for a fork (default 2: an ADD's bridge and portmap calls; 0: fork one "
                   "at each call)")
    p.add_argument("--check-interval", type=float, default=30.0, metavar="SECONDS",
                   help="firewall check besides change notifications (default 30)")


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH",
                   help="the resident server to ask (default: CNI_BRIDGE_SOCKET, else "
                   f"{DEFAULT_SOCKET})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--server", action="store_true",
                       help="only the resident server: counters, health, calls running")
    which.add_argument("--no-server", action="store_true",
                       help="compute everything here, even when a server answers")


def cmd_serve(opts: argparse.Namespace) -> int:
    from cni_bridge.serve.server.loop import Options
    from cni_bridge.serve.server.main import serve

    if opts.max_workers < 1 or opts.check_interval <= 0 or opts.spare_workers < 0:
        raise ServeError("--max-workers must be at least 1, --spare-workers at least 0 and "
                         "--check-interval positive")
    return serve(Options(opts.socket, opts.max_workers, opts.spare_workers,
                         opts.check_interval))
