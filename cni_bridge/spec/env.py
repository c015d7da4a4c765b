"""The CNI_* environment: which variables each verb needs, and the reference's validation rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cni_bridge.spec.errors import UNKNOWN_CONTAINER, CniError, ConfigError, EnvError

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Which verbs require each variable (skel of libcni v1.3); listed in skel's order so the
# "missing" message names them in the same order as the reference.
REQUIRED_FOR: dict[str, frozenset[str]] = {
    "CNI_COMMAND": frozenset(VERBS),
    "CNI_CONTAINERID": frozenset({"ADD", "DEL", "CHECK"}),
    "CNI_NETNS": frozenset({"ADD", "CHECK"}),
    "CNI_IFNAME": frozenset({"ADD", "DEL", "CHECK"}),
    "CNI_ARGS": frozenset(),
    "CNI_PATH": frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS"}),
}

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
IFNAMSIZ = 16


@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def missing_variables(environ: Mapping[str, str]) -> list[str]:
    command = environ.get("CNI_COMMAND", "")
    return [
        name
        for name, verbs in REQUIRED_FOR.items()
        if not environ.get(name) and (name == "CNI_COMMAND" or command in verbs)
    ]


def read_env(environ: Mapping[str, str]) -> CniEnv:
    """Read the CNI variables; all missing ones are reported together (code 4)."""
    missing = missing_variables(environ)
    if missing:
        raise EnvError(f"required env variables [{','.join(missing)}] missing")
    return CniEnv(
        command=environ["CNI_COMMAND"],
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=environ.get("CNI_ARGS", ""),
        path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p),
        environ=dict(environ),
    )


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CniError("missing containerID", code=UNKNOWN_CONTAINER)
    if not _ID_RE.match(container_id):
        raise EnvError("invalid characters in containerID", container_id)


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise EnvError("interface name is empty")
    if len(ifname.encode()) > IFNAMSIZ - 1:
        raise EnvError(
            "interface name is too long",
            f"interface name should be less than {IFNAMSIZ} characters",
        )
    if ifname in (".", ".."):
        raise EnvError("interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise EnvError("interface name contains / or : or whitespace characters", ifname)


def validate_network_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError("missing network name")
    if not _ID_RE.match(name):
        raise ConfigError("invalid characters found in network name", name)
    return name
