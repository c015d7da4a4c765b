"""host-local configuration: the network config in, frozen dataclasses out (raw dicts stop here).

As the reference's ``LoadIPAMConfig``: ``runtimeConfig.ipRanges``, then the legacy single range
(``ipam.subnet`` ...), then ``ipam.ranges``. Requested IPs: ``CNI_ARGS`` ``IP=``,
``args.cni.ips`` and ``runtimeConfig.ips``, duplicates removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cni_bridge.cni.args import parse_cni_args
from cni_bridge.cni.env import validate_network_name
from cni_bridge.cni.errors import CniError, ConfigError, EnvError
from cni_bridge.cni.result import DNS, IPAddress, Route, parse_route
from cni_bridge.cni.versions import at_least
from cni_bridge.ipam.host_local.ranges import Range, RangeSet, parse_ip, parse_range_set, show

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# CNI_ARGS keys host-local understands (matched case-sensitively, like Go struct fields).
HOST_LOCAL_ARG_KEYS = frozenset({"IP"})


@dataclass(frozen=True)
class StoreLocation:
    """Where a network's reservations live: ``<data_dir>/<network>/``."""

    data_dir: str
    network: str


@dataclass(frozen=True)
class HostLocalConfig:
    location: StoreLocation
    cni_version: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...] = ()
    resolv_conf: str = ""
    requested: tuple[IPAddress, ...] = ()

    def range_for(self, ip: IPAddress) -> Range | None:
        return next((r for s in self.range_sets if (r := s.range_for(ip)) is not None), None)


def load_config(config: Mapping[str, Any], cni_version: str, cni_args: str = "",
                known_arg_keys: frozenset[str] = HOST_LOCAL_ARG_KEYS) -> HostLocalConfig:
    """Everything ADD and CHECK need; `known_arg_keys`: the caller's own CNI_ARGS keys."""
    location = load_location(config)
    ipam = _ipam_section(config)
    requested = _requested_ips(config, cni_args, known_arg_keys | HOST_LOCAL_ARG_KEYS)
    raw_sets = _raw_range_sets(config, ipam)
    if not raw_sets:
        raise ConfigError("no IP ranges specified", "set ipam.subnet or ipam.ranges")
    range_sets = tuple(parse_range_set(raw, i) for i, raw in enumerate(raw_sets))
    _check_families(range_sets, cni_version)
    _check_set_overlaps(range_sets)
    return HostLocalConfig(
        location=location,
        cni_version=cni_version,
        range_sets=range_sets,
        routes=_routes(ipam.get("routes")),
        resolv_conf=_opt_str(ipam, "resolvConf", "ipam"),
        requested=requested,
    )


def load_location(config: Mapping[str, Any]) -> StoreLocation:
    """Only what DEL and GC need: they must work even when the ranges no longer validate."""
    network = validate_network_name(config.get("name"))
    ipam = _ipam_section(config)
    data_dir = _opt_str(ipam, "dataDir", "ipam") or DEFAULT_DATA_DIR
    if "\0" in data_dir:
        raise ConfigError("invalid ipam.dataDir", f"{data_dir!r} contains a NUL byte")
    return StoreLocation(data_dir=data_dir, network=network)


def parse_resolv_conf(text: str) -> DNS:
    """resolv.conf -> DNS as the reference reads it (``domain``: last wins; others append)."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            nameservers.append(values[0])
        elif key == "domain":
            domain = values[0]
        elif key == "search":
            search.extend(values)
        elif key == "options":
            options.extend(values)
    return DNS(tuple(nameservers), domain, tuple(search), tuple(options))


def _ipam_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    ipam = config.get("ipam")
    if ipam is None:
        raise ConfigError("IPAM config missing 'ipam' key")
    if not isinstance(ipam, Mapping):
        raise ConfigError("invalid ipam", f"ipam must be a JSON object, got {show(ipam)}")
    return ipam


def _optional(value: Any, kind: type, where: str, what: str) -> Any:
    """`value` (None when absent) if it is a `kind`: Go's decoder refuses any other type."""
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"invalid {where}", f"must be {what}, got {show(value)}")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    return _optional(value, Mapping, where, "a JSON object") or {}


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    return _optional(obj.get(key), str, f"{where}.{key}", "a string") or ""


def _routes(value: Any) -> tuple[Route, ...]:
    routes = []
    for i, item in enumerate(_optional(value, list, "ipam.routes", "a list") or []):
        try:
            routes.append(parse_route(item, f"ipam.routes[{i}]"))
        except CniError as exc:
            raise ConfigError(exc.msg, exc.details) from None
    return tuple(routes)


def _raw_range_sets(config: Mapping[str, Any], ipam: Mapping[str, Any]) -> list[tuple[Any, str]]:
    """Every range set as (raw list, where it came from), in the reference's order."""
    sets: list[tuple[Any, str]] = []
    runtime = _object(config.get("runtimeConfig"), "runtimeConfig")
    sets += _set_list(runtime.get("ipRanges"), "runtimeConfig.ipRanges")
    if ipam.get("subnet") is not None:
        legacy = {k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}
        sets.append(([legacy], "ipam"))
    sets += _set_list(ipam.get("ranges"), "ipam.ranges")
    return sets


def _set_list(value: Any, where: str) -> list[tuple[Any, str]]:
    items = _optional(value, list, where, "a list of range sets") or []
    return [(item, f"{where}[{i}]") for i, item in enumerate(items)]


def _check_families(sets: Sequence[RangeSet], cni_version: str) -> None:
    v4 = sum(1 for s in sets if s.version == 4)
    if (v4 > 1 or len(sets) - v4 > 1) and not _version_at_least(cni_version, "0.3.0"):
        raise ConfigError(
            f"CNI version {cni_version} does not support more than 1 address per family",
            "use cniVersion 0.3.0 or later for several range sets of one family",
        )


def _version_at_least(version: str, minimum: str) -> bool:
    try:
        return at_least(version, minimum)
    except CniError:
        return False


def _check_set_overlaps(sets: Sequence[RangeSet]) -> None:
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if a.overlaps(sets[j]):
                raise ConfigError(f"range set {i} overlaps with {j}", f"{a} and {sets[j]}")


def _requested_ips(
    config: Mapping[str, Any], cni_args: str, known: frozenset[str]
) -> tuple[IPAddress, ...]:
    found: list[IPAddress] = []
    env_ip = parse_cni_args(cni_args, known).get("IP", "")
    if env_ip:
        ip = parse_ip(env_ip, allow_prefix=True)
        if ip is None:
            raise EnvError("ARGS: invalid IP in CNI_ARGS", f"IP={env_ip!r} is not an IP address")
        found.append(ip)
    cni = _object(_object(config.get("args"), "args").get("cni"), "args.cni")
    found += _ip_list(cni.get("ips"), "args.cni.ips")
    runtime = _object(config.get("runtimeConfig"), "runtimeConfig")
    found += _ip_list(runtime.get("ips"), "runtimeConfig.ips")
    return tuple(dict.fromkeys(found))


def _ip_list(value: Any, where: str) -> Iterable[IPAddress]:
    out = []
    for item in _optional(value, list, where, "a list of IP addresses") or []:
        ip = parse_ip(item, allow_prefix=True)
        if ip is None:
            raise ConfigError(f"invalid {where}", f"{show(item)} is not an IP address")
        out.append(ip)
    return out
