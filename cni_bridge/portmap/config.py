"""portmap's configuration, parsed once (REFERENCE.md §4.1), and the container's addresses.

Stricter than the reference, on purpose (USERS.md items 20 and 23): an invalid mapping is
refused before anything is installed, and ``hostIP`` ``::1`` too (IPv6 has no route_localnet,
so a published ``[::1]`` port could never answer).

Backend: the explicit ``backend``; else the one the options are written for (an
``externalSetMarkChain`` or iptables ``conditionsV4`` imply iptables); else the detected default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cni_bridge.cni.errors import ConfigError, go_quote
from cni_bridge.cni.fields import get_bool, get_int, get_list, get_str
from cni_bridge.cni.request import Request
from cni_bridge.cni.result import IPAddress, IPInterface, Result

# Must equal cni_bridge.firewall's values (a unit test checks): not imported from there, so that
# a call without mappings (the common DEL) never loads the firewall package (~50 ms).
Protocol = Literal["tcp", "udp", "sctp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp", "sctp")
DEFAULT_MARK_MASQ_BIT = 13
BackendName = Literal["iptables", "nftables"]
BACKENDS: tuple[BackendName, ...] = ("iptables", "nftables")
MAX_PORT = 65535
RECORD_PLUGIN = "portmap"  # names this plugin's attachment records
DEFAULT_PROTOCOL: Protocol = "tcp"


@dataclass(frozen=True)
class MappingSpec:
    """One entry of ``runtimeConfig.portMappings``; `host_ip` None means any address."""

    host_port: int
    container_port: int
    protocol: Protocol
    host_ip: IPAddress | None = None

    def matches_family(self, version: int) -> bool:
        """A mapping with a host IP only applies to that family ("0.0.0.0" is IPv4 only)."""
        return self.host_ip is None or self.host_ip.version == version


@dataclass(frozen=True)
class Options:
    """The firewall layer's ``PortmapOptions`` fields (`ops.to_options` converts)."""

    snat: bool = True
    masq_all: bool = False
    mark_masq_bit: int = DEFAULT_MARK_MASQ_BIT
    external_set_mark_chain: str | None = None
    conditions_v4: tuple[str, ...] = ()
    conditions_v6: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortmapConfig:
    mappings: tuple[MappingSpec, ...] = ()
    options: Options = Options()
    backend: BackendName | None = None  # explicit `backend`
    implied_backend: BackendName | None = None  # the one the options are written for

    @property
    def wanted_backend(self) -> BackendName | None:
        return self.backend or self.implied_backend


@dataclass(frozen=True)
class ContainerIPs:
    v4: IPInterface | None = None
    v6: IPInterface | None = None

    def __iter__(self) -> Iterator[IPInterface]:
        return iter([ip for ip in (self.v4, self.v6) if ip is not None])


def _port(entry: Mapping[str, Any], key: str, where: str) -> int:
    if key not in entry:
        raise ConfigError(f"{where}: {key} is missing")
    port = get_int(entry, key, where=f"{where}: ")
    if not 0 < port <= MAX_PORT:
        what = "host" if key == "hostPort" else "container"
        raise ConfigError(f"Invalid {what} port number: {port}",
                          f"{where}: {key} must be in 1-{MAX_PORT}")
    return port


def _protocol(entry: Mapping[str, Any], where: str) -> Protocol:
    text = get_str(entry, "protocol", where=f"{where}: ").lower() or DEFAULT_PROTOCOL
    for proto in PROTOCOLS:
        if proto == text:
            return proto
    raise ConfigError(f"{where}: unknown protocol {go_quote(text)}",
                      f"expected one of {', '.join(PROTOCOLS)}")


def _host_ip(entry: Mapping[str, Any], where: str) -> IPAddress | None:
    text = get_str(entry, "hostIP", where=f"{where}: ")
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: invalid hostIP {go_quote(text)}",
                          "hostIP must be an IPv4 or IPv6 address") from None
    if address.version == 6 and address.is_loopback:
        raise ConfigError(f"{where}: hostIP ::1 cannot be published",
                          "IPv6 has no route_localnet: publish 127.0.0.1 or a global address")
    return address


MAPPING_KEYS = ("hostPort", "containerPort", "protocol", "hostIP")


def go_field_names(entry: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Keys matched to `names` case-insensitively, the last match winning, as Go's
    encoding/json does (containerd's CRI sends ``HostPort``, ``ContainerPort``...)."""
    by_fold = {name.casefold(): name for name in names}
    out: dict[str, Any] = {}
    for key, value in entry.items():
        out[by_fold.get(key.casefold(), key)] = value
    return out


def parse_mapping(entry: Any, index: int) -> MappingSpec:
    where = f"portMappings[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a JSON object", repr(entry)[:200])
    entry = go_field_names(entry, MAPPING_KEYS)
    return MappingSpec(
        host_port=_port(entry, "hostPort", where),
        container_port=_port(entry, "containerPort", where),
        protocol=_protocol(entry, where),
        host_ip=_host_ip(entry, where),
    )


def _conditions(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = get_list(config, key)
    if not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{key} must be a list of strings", repr(items)[:200])
    return tuple(items)


def conditions_backend(tokens: Sequence[str]) -> BackendName | None:
    """iptables matches start with "-" or "!"; an empty list or first token says none (the
    reference ignores such a list)."""
    if not tokens or not tokens[0]:
        return None
    return "iptables" if tokens[0].startswith(("-", "!")) else "nftables"


def _options_by_backend(options: Options) -> dict[str, list[str]]:
    """Configured options only one backend understands (the reference's wording)."""
    found: dict[str, list[str]] = {"iptables": [], "nftables": []}
    if options.external_set_mark_chain is not None:
        found["iptables"].append("externalSetMarkChain")
    for key, tokens in (("conditionsV4", options.conditions_v4),
                        ("conditionsV6", options.conditions_v6)):
        backend = conditions_backend(tokens)
        if backend is not None:
            found[backend].append(key)
    return found


def _go_list(items: Sequence[str]) -> str:
    return "[" + " ".join(items) + "]"  # Go's %v of a []string


def _backend(config: Mapping[str, Any]) -> BackendName | None:
    name = get_str(config, "backend")
    if not name:
        return None
    for backend in BACKENDS:
        if backend == name:
            return backend
    raise ConfigError(f"unknown backend {go_quote(name)}", "expected iptables or nftables")


def parse_options(config: Mapping[str, Any]) -> Options:
    if config.get("markMasqBit") is not None and config.get("externalSetMarkChain") is not None:
        raise ConfigError("Cannot specify externalSetMarkChain and markMasqBit")
    bit = get_int(config, "markMasqBit", DEFAULT_MARK_MASQ_BIT)
    if not 0 <= bit <= 31:
        raise ConfigError("MasqMarkBit must be between 0 and 31", f"got {bit}")
    external = config.get("externalSetMarkChain")
    if external is not None and (not isinstance(external, str) or not external):
        raise ConfigError("externalSetMarkChain must be a chain name", repr(external)[:200])
    return Options(
        snat=get_bool(config, "snat", True),
        masq_all=get_bool(config, "masqAll"),
        mark_masq_bit=bit,
        external_set_mark_chain=external,
        conditions_v4=_conditions(config, "conditionsV4"),
        conditions_v6=_conditions(config, "conditionsV6"),
    )


def parse_config(config: Mapping[str, Any], runtime_config: Mapping[str, Any]) -> PortmapConfig:
    options = parse_options(config)
    backend = _backend(config)
    by_backend = _options_by_backend(options)
    if backend is not None:
        wrong = "nftables" if backend == "iptables" else "iptables"
        if by_backend[wrong]:
            raise ConfigError(f"{backend} backend was requested but configuration contains "
                              f"{wrong}-specific options {_go_list(by_backend[wrong])}")
    elif by_backend["iptables"] and by_backend["nftables"]:
        raise ConfigError(
            f"configuration contains iptables-specific options {_go_list(by_backend['iptables'])}"
            f" and nftables-specific options {_go_list(by_backend['nftables'])}")
    implied: BackendName | None = (
        "iptables" if by_backend["iptables"] else "nftables" if by_backend["nftables"] else None)
    raw = get_list(runtime_config, "portMappings", where="runtimeConfig.")
    mappings = tuple(parse_mapping(entry, i) for i, entry in enumerate(raw))
    return PortmapConfig(mappings, options, backend, implied)


def load_config(req: Request) -> PortmapConfig:
    return parse_config(req.config, req.runtime_config)


def container_ips(result: Result, ifname: str) -> ContainerIPs:
    """First IPv4 and first IPv6 on the sandboxed `ifname`; as the reference, an IP without
    a valid ``interface`` index is taken."""
    found: dict[int, IPInterface] = {}
    for ip in result.ips:
        version = ip.address.version
        if version in found:
            continue
        index = ip.interface
        if index is not None and 0 <= index < len(result.interfaces):
            iface = result.interfaces[index]
            if iface.name != ifname or not iface.sandbox:
                continue
        found[version] = ip.address
    return ContainerIPs(found.get(4), found.get(6))
