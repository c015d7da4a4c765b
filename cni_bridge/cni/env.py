"""The CNI_* environment: which variables each verb needs, and the reference's validation rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cni_bridge.cni.errors import UNKNOWN_CONTAINER, CniError, ConfigError, EnvError

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

# fullmatch, not "$": Python's "$" also matches before a trailing newline, Go's does not.
_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
IFNAMSIZ = 16
# Container IDs and network names end up in file and directory names (host-local's store, the
# attachment records), so neither may be longer than a file name (NAME_MAX). libcni sets no
# limit; runtimes use at most 76 characters. Matching IDs are ASCII: characters are bytes.
MAX_ID_LENGTH = 255


def valid_name(name: str) -> bool:
    """A container ID or network name as libcni allows them (length aside)."""
    return _ID_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CniError("missing containerID", code=UNKNOWN_CONTAINER)
    if not _ID_RE.fullmatch(container_id):
        raise EnvError("invalid characters in containerID", container_id)
    if len(container_id) > MAX_ID_LENGTH:
        raise EnvError("containerID is too long",
                       f"{len(container_id)} characters; at most {MAX_ID_LENGTH}")


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise EnvError("interface name is empty")
    # Bytes, as the kernel counts; surrogateescape keeps undecodable env bytes countable.
    if len(ifname.encode("utf-8", "surrogateescape")) > IFNAMSIZ - 1:
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
    if not _ID_RE.fullmatch(name):
        raise ConfigError("invalid characters found in network name", name)
    if len(name) > MAX_ID_LENGTH:
        raise ConfigError("network name is too long",
                          f"{len(name)} characters; at most {MAX_ID_LENGTH}")
    return name


_VALIDATORS: dict[str, Callable[[str], None]] = {
    "CNI_CONTAINERID": validate_container_id,
    "CNI_IFNAME": validate_ifname,
}


def missing_variables(environ: Mapping[str, str]) -> list[str]:
    command = environ.get("CNI_COMMAND", "")
    return [
        name
        for name, verbs in REQUIRED_FOR.items()
        if not environ.get(name) and (name == "CNI_COMMAND" or command in verbs)
    ]


def read_env(environ: Mapping[str, str]) -> CniEnv:
    """As skel does, before stdin is read: in skel's order, a set variable the verb needs is
    validated at once (first failure wins); then the missing ones are reported together."""
    command = environ.get("CNI_COMMAND", "")
    for name, verbs in REQUIRED_FOR.items():
        value = environ.get(name, "")
        if "\x00" in value:  # only an in-process caller can pass one (execve cannot)
            raise EnvError(f"{name} contains a NUL byte", repr(value)[:200])
        if value and command in verbs and name in _VALIDATORS:
            _VALIDATORS[name](value)
    missing = missing_variables(environ)
    if missing:
        raise EnvError(f"required env variables [{','.join(missing)}] missing")
    return CniEnv(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=environ.get("CNI_ARGS", ""),
        path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p),
        environ=dict(environ),
    )
