"""Choosing a firewall backend: nftables wherever ``nft`` works, else iptables.

The reference prefers iptables; we do not (README "Performance"): our nftables layout costs
the same with 0 or thousands of containers and takes no global lock, while every iptables-save
and -restore handles the whole nat table. iptables stays for sharing state with the reference.
"""

from __future__ import annotations

import os
from typing import Literal

from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import CommandRunner
from cni_bridge.firewall.leftovers import IptablesLeftovers
from cni_bridge.firewall.nft.backend import NftablesBackend
from cni_bridge.firewall.noop import NoopBackend
from cni_bridge.node import records

log = logger(__name__)
BackendName = Literal["nftables", "iptables", "none"]
BACKEND_NAMES: tuple[BackendName, ...] = ("nftables", "iptables", "none")


def make_backend(name: str, runner: CommandRunner, leftovers: bool = True) -> Backend:
    """`leftovers` off where every backend runs anyway (each then cleans its own layout)."""
    if name == "nftables":
        return NftablesBackend(runner, leftovers=IptablesLeftovers(runner) if leftovers else None)
    if name == "iptables":
        return iptables_backend(runner, own_layout=not leftovers)
    if name == "none":
        return NoopBackend()
    raise ConfigError(f"unknown firewall backend {name!r}; expected one of "
                      f"{', '.join(BACKEND_NAMES)}")


def iptables_backend(runner: CommandRunner, recorded: bool = False,
                     own_layout: bool = False) -> Backend:
    """Imported only by the calls that use it: a few ms of imports for the nftables path."""
    from cni_bridge.firewall.iptables.backend import IptablesBackend

    return IptablesBackend(runner, recorded=recorded,
                           leftovers=None if recorded or own_layout else NftablesBackend(runner))


def recorded_backend(name: object, runner: CommandRunner) -> Backend | None:
    """The backend our ADD recorded, looking at its own layout only (a record proves where the
    owner's state is). None when unknown or no longer usable: then clean everywhere."""
    backend: Backend
    if name == "nftables":
        backend = NftablesBackend(runner, reference_layouts=False)
    elif name == "iptables":
        backend = iptables_backend(runner, recorded=True)
    else:
        return None
    return backend if is_usable(backend) else None


def is_usable(backend: Backend) -> bool:
    """``backend.available()``, remembered once true by a marker under the state root (gone at
    reboot): probing costs every call. A failure is never remembered."""
    if isinstance(backend, NoopBackend):
        return True
    marker = records.probe_marker(backend.name)
    if marker is not None and os.path.exists(marker):
        return True
    if not backend.available():
        return False
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        log.debug("cannot remember that %s is usable: %s", backend.name, exc)
    return True


def detect_backend(runner: CommandRunner, requested: str | None = None) -> Backend:
    """`requested` if given (it must be usable), else nftables if usable, else iptables."""
    if requested:
        backend = make_backend(requested, runner)
        if not is_usable(backend):
            raise CniError(f"firewall backend {requested} was requested but is not usable")
        return backend
    for name in ("nftables", "iptables"):
        candidate = make_backend(name, runner)
        if is_usable(candidate):
            log.debug("firewall backend: %s", candidate.name)
            return candidate
    raise CniError("no usable firewall backend: neither nft nor iptables-save works",
                   "install nftables (preferred) or iptables")
