"""Choosing a firewall backend.

We prefer **nftables** wherever ``nft`` works, and fall back to iptables only when it does not
(the reference does the opposite). Why:

- Cost. Our nftables layout is a constant skeleton plus map elements: ADD and DEL insert and
  delete a few elements in one nft transaction, run in-process by libnftables, and cost the
  same with 0 or thousands of containers. The iptables layout (kept byte-compatible with the
  reference) is a chain per container, and every ``iptables-save``/``iptables-restore``
  handles the whole nat table, so the cost grows with the node (USERS.md items 2 and 3).
- No global lock. nft transactions are atomic in the kernel; iptables-legacy serialises every
  writer on the node (kube-proxy included) on /run/xtables.lock (item 2).
- Our own table. Rules live in ``inet cni_bridge``, untouched by iptables-nft/iptables-legacy
  split-brain and by other programs flushing iptables chains (items 7 and 8).
- Security fixes come built in: DNAT only to local destinations, localhost exposure dropped
  (items 4 and 5).

Choose iptables explicitly to share state with the reference plugins (an operator can swap
binaries on a live node in both directions) or on hosts without nftables support. Each backend's
removals also clean the other layout and the reference plugins' nftables tables (leftovers).
"""

from __future__ import annotations

import os
from typing import Literal

from cni_bridge.cni.errors import CniError, ConfigError
from cni_bridge.diag import logger
from cni_bridge.firewall.backend import Backend
from cni_bridge.firewall.commands import CommandRunner
from cni_bridge.firewall.leftovers import IptablesLeftovers, nftables_leftovers
from cni_bridge.firewall.nft.backend import NftablesBackend
from cni_bridge.firewall.noop import NoopBackend
from cni_bridge.node import records

log = logger(__name__)
BackendName = Literal["nftables", "iptables", "none"]
BACKEND_NAMES: tuple[BackendName, ...] = ("nftables", "iptables", "none")


def make_backend(name: str, runner: CommandRunner) -> Backend:
    """The backend called `name` (config values ``nftables``, ``iptables``, ``none``)."""
    if name == "nftables":
        return NftablesBackend(runner, leftovers=IptablesLeftovers(runner))
    if name == "iptables":
        return iptables_backend(runner)
    if name == "none":
        return NoopBackend()
    raise ConfigError(f"unknown firewall backend {name!r}; expected one of "
                      f"{', '.join(BACKEND_NAMES)}")


def iptables_backend(runner: CommandRunner, recorded: bool = False) -> Backend:
    """The iptables backend, imported only by the calls that use it (its modules cost the
    nftables path a few ms of imports otherwise)."""
    from cni_bridge.firewall.iptables.backend import IptablesBackend

    return IptablesBackend(runner, recorded=recorded,
                           leftovers=None if recorded else nftables_leftovers(runner))


def recorded_backend(name: object, runner: CommandRunner) -> Backend | None:
    """The backend our own ADD recorded (`name` as read from the record), for removing what
    that ADD installed: it looks only at its own layout, not at the other backend's or the
    reference plugins' (a record proves where the owner's state is). None when the name is
    not a firewall backend or that backend is no longer usable: then clean everywhere."""
    backend: Backend
    if name == "nftables":
        backend = NftablesBackend(runner, reference_layouts=False)
    elif name == "iptables":
        backend = iptables_backend(runner, recorded=True)
    else:
        return None
    return backend if is_usable(backend) else None


def is_usable(backend: Backend) -> bool:
    """``backend.available()``, remembered once true: probing (a dry run of our nft table,
    ``iptables-save -t nat``, which grows with the node) would cost every call. A marker
    under the state root (/run: gone at reboot, per namespace) remembers a success; a failure
    is never remembered, nor anything in a directory not proven this namespace's."""
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
