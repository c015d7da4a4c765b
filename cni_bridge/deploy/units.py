"""``cni-bridge install --serve``: the systemd units of resident mode, written and enabled.

The texts are rendered for the bin dir being installed; ``conf/deploy/systemd/`` holds them for
``/opt/cni/bin`` (a unit test holds them equal). Enabled only where PID 1 is systemd and the units
go to ``/etc/systemd/system``; elsewhere the report says how.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cni_bridge.deploy.install import InstallError, fsync_dir, synced_temp_file
from cni_bridge.serve.wire import DEFAULT_SOCKET

SOCKET_UNIT = "cni-bridge.socket"
SERVICE_UNIT = "cni-bridge.service"
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists only when PID 1 is systemd
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
ENABLE = (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", SOCKET_UNIT))

SOCKET_TEXT = """\
# cni-bridge resident mode, socket-activated (see README.md, "Resident mode").
#
# systemd listens where the plugins look; the first plugin call starts cni-bridge.service,
# which takes this socket (LISTEN_FDS). Until then nothing runs; a server that stops or crashes
# is started again by the next call. Written and enabled by `cni-bridge install --serve`.
[Unit]
Description=cni-bridge resident mode socket (plugin calls hand themselves over here)
Before=containerd.service crio.service kubelet.service

[Socket]
# Where the plugins look (CNI_BRIDGE_SOCKET, else {socket}). Another path: here, in the
# service's `serve --socket`, and in CNI_BRIDGE_SOCKET for the runtime.
ListenStream={socket}
SocketUser=root
SocketGroup=root
SocketMode=0600
# Its directory also holds the plugins' records: private to root.
DirectoryMode=0700
# Calls beyond the server's worker cap wait here (their hand-off times out into a local run).
Backlog=128
# The socket is systemd's: the server never removes it; stopping this unit does.
RemoveOnStop=yes
Service={service}

[Install]
WantedBy=sockets.target
"""

SERVICE_TEXT = """\
# cni-bridge resident mode: one `cni-bridge serve` per node (see README.md, "Resident mode").
#
# Optional: the plugins work without it, running each call themselves. While it runs, they hand
# their calls to it (same results, less start-up), and it restores their firewall rules after
# a firewall reload. Started by {socket_unit} at the first plugin call; it takes the listening
# socket systemd passes it. Written and enabled by `cni-bridge install --serve`.
[Unit]
Description=cni-bridge resident mode (runs CNI plugin calls, heals their firewall rules)
Requires={socket_unit}
After={socket_unit}

[Service]
Type=notify
ExecStart={executable} serve{socket_option}
# The socket's directory also holds the plugins' records of what they installed: it must
# survive the service (records are the plugins', not the server's).
RuntimeDirectory=cni-bridge
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
# On stop the server stops taking calls (they wait on systemd's socket, or run standalone after
# 2 s) and waits up to 15 s for calls in flight; whatever is still running then is left to
# finish (a killed call would give its runtime code 11).
KillMode=process
TimeoutStopSec=20
# It also stops by itself when {executable} is replaced (cni-bridge install), so that the new
# build serves: plugins of a new build are never served by an old server.
Restart=always
RestartSec=1

[Install]
# Enabling the socket is enough; enabling this as well starts the server at boot, so that it
# heals the firewall before the first call.
Also={socket_unit}
WantedBy=multi-user.target
"""


class UnitsError(InstallError):
    """The units cannot be written or enabled; the message says what to do."""


@dataclass
class UnitsReport:
    written: dict[Path, str] = field(default_factory=dict)  # path -> written/replaced/unchanged
    enabled: bool = False
    next_step: str | None = None  # what the operator still has to do


def render(executable: str, socket: str = DEFAULT_SOCKET) -> dict[str, str]:
    option = "" if socket == DEFAULT_SOCKET else f" --socket {socket}"
    return {SOCKET_UNIT: SOCKET_TEXT.format(socket=socket, service=SERVICE_UNIT),
            SERVICE_UNIT: SERVICE_TEXT.format(socket_unit=SOCKET_UNIT, executable=executable,
                                              socket_option=option)}


def plan(unit_dir: Path | None, runtime: Path = SYSTEMD_RUNTIME) -> tuple[Path, bool]:
    """Where to write and whether to enable, decided before anything is written."""
    running = runtime.is_dir()
    if unit_dir is None and not running:
        raise UnitsError(f"--serve: systemd is not running here ({runtime} is missing), so "
                         "nothing was installed; run `cni-bridge serve` under your init system "
                         "or as a DaemonSet (conf/deploy/kubernetes/cni-bridge-serve.yaml), or "
                         "pass --systemd-dir DIR to write the units for a systemd node")
    return (unit_dir or SYSTEM_UNIT_DIR), running


def write_units(unit_dir: Path, texts: dict[str, str]) -> dict[Path, str]:
    """All staged (synced temporaries) before any is renamed into place."""
    unit_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    staged: dict[Path, str] = {}
    outcome: dict[Path, str] = {}
    try:
        for name, text in texts.items():
            path = unit_dir / name
            old = path.read_text() if path.is_file() else None
            outcome[path] = "unchanged" if old == text else "replaced" if old else "written"
            if old != text:
                staged[path] = synced_temp_file(unit_dir, text)
    except BaseException:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for path, tmp in staged.items():
        os.replace(tmp, path)
    fsync_dir(unit_dir)
    return outcome


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def enable(run: Runner = subprocess.run) -> None:
    for argv in ENABLE:
        try:
            proc = run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UnitsError(f"{' '.join(argv)}: {exc}; the units are written, run it "
                             "by hand") from None
        if proc.returncode != 0:
            raise UnitsError(f"{' '.join(argv)} failed ({proc.returncode}): "
                             f"{proc.stderr.strip()}; the units are written, fix and run it "
                             "by hand")


def install_units(executable: str, unit_dir: Path, running: bool,
                  run: Runner = subprocess.run) -> UnitsReport:
    report = UnitsReport(write_units(unit_dir, render(executable)))
    if running and unit_dir.resolve() == SYSTEM_UNIT_DIR:
        enable(run)
        report.enabled = True
    else:
        report.next_step = (f"on the node, with the units in {SYSTEM_UNIT_DIR}: "
                            "systemctl daemon-reload && systemctl enable --now " + SOCKET_UNIT)
    return report
