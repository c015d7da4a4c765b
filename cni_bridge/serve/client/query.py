"""The operator's side of ``cni-bridge status``: asking a running server.

A server answers from memory: the records it watches, its last health check, its counters. The
answer is used only when the server watches the same namespace and record directory as this
command would read (it heals its own namespace); otherwise status computes everything itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cni_bridge.serve import wire


class Attachment(Protocol):
    """What `apply` needs of an attachment the status command found (admin.examine's)."""

    rules: str

    @property
    def sources(self) -> Sequence[str]: ...


class Network(Protocol):
    @property
    def attachments(self) -> Sequence[Attachment]: ...


def ask_socket(path: str | None) -> dict[str, Any] | None:
    """The status answer of the server at `path` or where the plugins look; None: no answer."""
    path = path or wire.socket_path(os.environ)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(wire.HELLO_TIMEOUT)
    try:
        sock.connect(path)
        wire.send(sock, wire.STATUS)
        answer = wire.recv(sock)
    except (OSError, EOFError, wire.ProtocolError):
        return None
    finally:
        sock.close()
    if answer.kind != wire.STATUS or len(answer.fields) != 1:
        return None
    try:
        doc = json.loads(answer.fields[0])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def print_server(path: str | None, as_json: bool) -> int:
    """``cni-bridge status --server``."""
    answer = ask_socket(path)
    if as_json:
        print(json.dumps({"server": answer}, indent=2))
    elif answer is None:
        print("no resident server answers (cni-bridge serve)")
    else:
        print("\n".join(format_server(answer)))
    return 0 if answer is not None else 1


def watches(answer: Mapping[str, Any], root: Path) -> bool:
    """Whether the server heals the namespace and records this process would look at: the
    same namespace by its cookie (inode numbers are reused), the same record directory."""
    from cni_bridge.node.owner import netns_cookie

    cookie = netns_cookie()
    same = (answer.get("netns_cookie") == cookie if cookie is not None
            else answer.get("netns") == os.stat("/proc/self/ns/net").st_ino)
    return same and answer.get("state_root") == str(root)


def rules_from_health(answer: Mapping[str, Any]) -> str:
    """The RULES column for recorded attachments, from the server's last check of the
    firewall skeleton (vocabulary of ``admin.examine.rules_state``)."""
    health = answer.get("health")
    if not health:
        return "unknown: the server has not checked the firewall yet"
    if health.get("remaining"):
        return "missing: " + "; ".join(health["remaining"])
    if health.get("errors"):
        return "unknown: " + "; ".join(health["errors"])
    return "present"


def apply(statuses: Iterable[Network], answer: Mapping[str, Any]) -> None:
    """Recorded attachments take their rules state from the server."""
    rules = rules_from_health(answer)
    for st in statuses:
        for att in st.attachments:
            if "record" in att.sources:
                att.rules = rules


def _ago(then: float | None, now: float) -> str:
    if not then:
        return "never"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds} s ago"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then))


def format_server(answer: Mapping[str, Any], now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    served = answer.get("served") or {}
    by_verb = ", ".join(f"{verb} {n}" for verb, n in sorted(served.items()))
    lines = [f"resident server  pid {answer.get('pid')} on {answer.get('socket')}, "
             f"build {answer.get('digest')}, up {answer.get('uptime_s')} s",
             f"  calls          {answer.get('served_total', 0)} served"
             + (f" ({by_verb})" if by_verb else "")
             + f", {sum((answer.get('refused') or {}).values())} refused, "
             f"{answer.get('lost', 0)} lost, {answer.get('abandoned', 0)} abandoned, "
             f"{len(answer.get('in_flight') or [])} running"]
    health = answer.get("health")
    if health:
        state = rules_from_health(answer)
        lines.append(f"  firewall       {'skeleton whole' if state == 'present' else state}, "
                     f"checked {_ago(health.get('time'), now)} ({health.get('trigger')})")
    else:
        lines.append("  firewall       not checked yet")
    restore = answer.get("last_restore")
    if restore:
        lines.append(f"  last restore   {_ago(restore.get('time'), now)}: "
                     f"{restore.get('restored')} record(s) after {restore.get('trigger')}, "
                     f"{restore.get('ms')} ms")
    return lines
