"""``cni-bridge``: the command-line tool for people (the plugins run under their own names)."""

from __future__ import annotations

import argparse

from cni_bridge import __version__
from cni_bridge.spec.versions import SUPPORTED_VERSIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cni-bridge",
        description=(
            "CNI bridge, host-local and portmap plugins in one executable. Runtimes run it "
            "under the names 'bridge', 'host-local' and 'portmap'; under its own name it is "
            "this tool."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the program version and the CNI versions it speaks")
    return parser


def main(args: list[str]) -> int:
    parser = build_parser()
    opts = parser.parse_args(args)
    if opts.command == "version":
        print(f"cni-bridge {__version__}")
        print(f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}")
        return 0
    parser.print_help()
    return 0 if opts.command is None else 2
