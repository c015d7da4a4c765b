"""Flushing stale UDP conntrack entries for host ports (USERS: UDP senders black-holed).

A UDP sender that keeps talking to a host port keeps its conntrack entry, which still points at
the previous container; after the mapping changes, those datagrams go nowhere until the entry
expires. After installing mappings, delete the entries whose original destination port is a
mapped UDP host port. Failures are logged, never raised: this is best effort, as in the reference.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from cni_bridge.firewall.model import PortMapping
from cni_bridge.firewall.runner import CommandRunner

log = logging.getLogger(__name__)
_DELETED_RE = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted")


def plan_udp_flush(entries: Iterable[PortMapping]) -> list[list[str]]:
    """One ``conntrack -D`` per (family, UDP host port), in a stable order."""
    keys = sorted({(e.version, e.host_port) for e in entries if e.protocol == "udp"})
    return [["conntrack", "-D", "-f", f"ipv{v}", "-p", "udp", "--orig-port-dst", str(port)]
            for v, port in keys]


def flush_udp_conntrack(runner: CommandRunner, entries: Iterable[PortMapping]) -> int:
    """Delete UDP conntrack entries for the mapped host ports; returns how many were deleted."""
    total = 0
    for argv in plan_udp_flush(entries):
        result = runner(argv)
        match = _DELETED_RE.search(result.stderr + result.stdout)
        count = int(match.group(1)) if match else 0
        # conntrack exits 1 when nothing matched; that is the normal case.
        if not result.ok and match is None:
            log.warning("%s failed (exit %d): %s", " ".join(argv), result.returncode,
                        result.stderr.strip())
        total += count
    if total:
        log.info("deleted %d stale UDP conntrack entries", total)
    return total
