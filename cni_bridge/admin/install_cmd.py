"""``cni-bridge install``: its options and its report (the work is in `install` and
`node_conf`, imported when the command runs, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"


def _cidrs(what: str) -> Callable[[str], list[Any]]:
    """An argparse type: one CIDR or a comma-separated list; a bad one is a usage error."""
    def parse(text: str) -> list[Any]:
        from cni_bridge.deploy.node_conf import parse_cidr_list

        try:
            return list(parse_cidr_list([text], what))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_install_parser(sub: Any) -> None:
    p = sub.add_parser("install", help="install the plugins into a CNI bin directory",
                       description="Copy this program into BIN_DIR as bridge, host-local, "
                       "portmap, loopback and cni-bridge, atomically (a runtime never runs a "
                       "half-written plugin). Run it from the frozen build "
                       "(dist/cni/cni-bridge). With --subnet, also write this node's network "
                       "for its pod CIDR. Everything is checked before anything is written.")
    p.add_argument("--bin-dir", default=DEFAULT_BIN_DIR, type=Path,
                   help=f"default {DEFAULT_BIN_DIR}")
    p.add_argument("--conf-dir", default=DEFAULT_CONF_DIR, type=Path,
                   help=f"for --with-conf and --subnet (default {DEFAULT_CONF_DIR})")
    p.add_argument("--with-conf", action="store_true",
                   help="also write the default network (10-cni-bridge.conflist) if absent")
    p.add_argument("--subnet", action="extend", type=_cidrs("pod CIDR"), default=[],
                   metavar="CIDR", help="write the node's network for this pod CIDR (one per "
                   "family; repeat or separate with commas for dual stack), replacing "
                   "10-cni-bridge.conflist")
    p.add_argument("--cluster-cidr", action="extend", type=_cidrs("cluster CIDR"), default=[],
                   metavar="CIDR", help="with --subnet: the cluster's pod CIDR; traffic to it "
                   "is not masqueraded (the bridge's nonMasqueradeCIDRs)")
    p.add_argument("--cni-version", metavar="V", help="with --subnet: the conflist's "
                   "cniVersion (default 1.1.0; 1.0.0 for runtimes built with libcni 1.1, such "
                   "as containerd 1.6 and 1.7)")
    p.add_argument("--serve", action="store_true",
                   help="also write the systemd units of resident mode (cni-bridge.socket and "
                   ".service, socket-activated: the server starts at the first call) and, where "
                   "systemd runs, enable them; elsewhere refuse unless --systemd-dir is given")
    p.add_argument("--systemd-dir", type=Path, metavar="DIR",
                   help="with --serve: write the units here (default /etc/systemd/system; "
                   "enabled only there, when systemd runs)")
    p.add_argument("--from", dest="source", type=Path, metavar="DIR",
                   help="the frozen bundle to install (default: this program's directory)")


def cmd_install(opts: argparse.Namespace) -> int:
    from cni_bridge.deploy import install

    source = opts.source or install.frozen_dir()
    if source is None:
        raise install.InstallError(
            "install copies the frozen build, and this is running from source: build it "
            "(build/build.sh) and run dist/cni/cni-bridge install, or pass --from dist/cni")
    node_conf = None
    if opts.subnet or opts.cluster_cidr or opts.cni_version:
        from cni_bridge.deploy.node_conf import prepare_node_conf

        node_conf = prepare_node_conf(opts.subnet, opts.cluster_cidr, opts.cni_version,
                                      opts.conf_dir)
    elif opts.with_conf:
        install.check_writable(opts.conf_dir)
    serve_plan = _plan_serve(opts) if opts.serve or opts.systemd_dir else None
    report = install.install(source.resolve(), opts.bin_dir)
    how = "already there, reused" if report.reused else "copied"
    print(f"bundle      {report.bundle} ({how})")
    print(f"linked      {', '.join(report.linked)} -> {report.bundle.name}/cni-bridge")
    if report.replaced:
        print(f"replaced    {', '.join(report.replaced)} (were not ours)")
    for old in report.removed:
        print(f"removed     {old} (an older version)")
    if node_conf is not None:
        from cni_bridge.deploy.node_conf import write_conflist

        path = opts.conf_dir / install.DEFAULT_CONF_NAME
        print(f"network     {path} ({write_conflist(path, node_conf)}; pod CIDR "
              f"{', '.join(map(str, opts.subnet))})")
    elif opts.with_conf:
        path, written = install.write_default_conf(opts.conf_dir)
        print(f"network     {path} ({'written' if written else 'exists, left as it is'})")
    if serve_plan is not None:
        _install_serve(opts.bin_dir, *serve_plan)
    print(f"next        cni-bridge status --plugin-dir {opts.bin_dir}")
    return 0


def _plan_serve(opts: argparse.Namespace) -> tuple[Path, bool]:
    """Where the units go and whether to enable them, checked before anything is written."""
    from cni_bridge.deploy import install, units

    if not opts.serve:
        raise install.InstallError("--systemd-dir is for --serve")
    unit_dir, running = units.plan(opts.systemd_dir)  # UnitsError is an InstallError
    install.check_writable(unit_dir)
    return unit_dir, running


def _install_serve(bin_dir: Path, unit_dir: Path, running: bool) -> None:
    from cni_bridge.deploy import install, units

    report = units.install_units(str(bin_dir.resolve() / install.EXECUTABLE), unit_dir, running)
    for path, how in report.written.items():
        print(f"unit        {path} ({how})")
    if report.enabled:
        print(f"enabled     {units.SOCKET_UNIT} (the server starts at the first plugin call)")
    if report.next_step:
        print(f"enable      {report.next_step}")
