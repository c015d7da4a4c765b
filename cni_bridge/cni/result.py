"""The one internal result model (CNI 1.1.0) and pure conversions from/to every spec version.

Wire shapes (REFERENCE.md §1.5), as libcni >= 1.2 converts and prints them:
- 0.1.0/0.2.0: ``ip4``/``ip6`` objects (first IP of each family, routes by family, dst/gw
  only), no interfaces;
- 0.3.x/0.4.0: struct key order, ``version`` in each ``ips[]`` entry, ``"dns": {}`` always;
  interfaces lose mtu/socketPath/pciID, routes keep every field (all versions share Go's
  route type);
- 1.0.0/1.1.0: one Go type, so every field survives; keys sorted at every level (libcni
  marshals through a map), empty dns omitted.
Route mtu/advmss/priority and interface mtu are Go ``int,omitempty``: 0 means absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from typing import Any, TypeVar

from cni_bridge.cni.errors import CniError, DecodeError, go_json
from cni_bridge.cni.versions import CURRENT_VERSION, SUPPORTED_VERSIONS

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network
T = TypeVar("T")

LEGACY_VERSIONS = ("0.1.0", "0.2.0")
STRUCT_VERSIONS = ("0.3.0", "0.3.1", "0.4.0")


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass(frozen=True)
class Result:
    cni_version: str = CURRENT_VERSION
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)


@dataclass(frozen=True)
class UnconvertedResult(Result):
    """A 1.x result under the request's version label, unconverted: libcni skips converting a
    result already labelled with the version asked for, so the reference ``loopback`` prints
    the 1.x shape at every version."""


def _typed(value: Any, kind: type, empty: Any, what: str, name: str) -> Any:
    if value is None:
        return empty
    if not isinstance(value, kind):
        raise DecodeError(f"{what} must be a JSON {name}", repr(value)[:200])
    return value


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    return _typed(value, Mapping, {}, what, "object")  # type: ignore[no-any-return]


def _list(value: Any, what: str) -> Sequence[Any]:
    return _typed(value, list, [], what, "list")  # type: ignore[no-any-return]


def _opt_int(obj: Mapping[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}.{key} must be an integer", repr(value))
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{what}.{key} must be a string", repr(value))
    return value


def _parse_text(text: Any, parse: Callable[[str], T], what: str, noun: str, shape: str) -> T:
    try:
        if not isinstance(text, str):
            raise ValueError
        return parse(text)
    except ValueError:
        raise DecodeError(f"invalid {noun} in {what}", f"{text!r} is not {shape}") from None


def _interface(text: str) -> IPInterface:
    if "/" not in text:
        raise ValueError
    return ip_interface(text)


def parse_address(text: Any, what: str) -> IPInterface:
    return _parse_text(text, _interface, what, "address", "an IP/prefix")


def parse_ip(text: Any, what: str) -> IPAddress:
    return _parse_text(text, ip_address, what, "IP", "an IP address")


def parse_network(text: Any, what: str) -> IPNetwork:
    # Routes may name a host address with a prefix ("10.0.0.5/8"); keep the network.
    return _parse_text(text, lambda t: ip_network(t, strict=False), what, "network", "a CIDR")


def parse_route(obj: Any, what: str = "route") -> Route:
    r = _obj(obj, what)
    gw = r.get("gw")
    return Route(
        dst=parse_network(r.get("dst"), f"{what}.dst"),
        gw=parse_ip(gw, f"{what}.gw") if gw else None,
        mtu=_opt_int(r, "mtu", what) or None,
        advmss=_opt_int(r, "advmss", what) or None,
        priority=_opt_int(r, "priority", what) or None,
        table=_opt_int(r, "table", what),
        scope=_opt_int(r, "scope", what),
    )


def parse_dns(obj: Any) -> DNS:
    d = _obj(obj, "dns")

    def strings(key: str) -> tuple[str, ...]:
        items = _list(d.get(key), f"dns.{key}")
        if not all(isinstance(i, str) for i in items):
            raise DecodeError(f"dns.{key} must be a list of strings")
        return tuple(items)

    return DNS(
        nameservers=strings("nameservers"),
        domain=_str(d, "domain", "dns"),
        search=strings("search"),
        options=strings("options"),
    )


def _parse_legacy(obj: Mapping[str, Any], version: str) -> Result:
    ips: list[IPConfig] = []
    routes: list[Route] = []
    for key in ("ip4", "ip6"):
        block = _obj(obj.get(key), key)
        if not block:
            continue
        gw = block.get("gateway")
        ips.append(
            IPConfig(
                address=parse_address(block.get("ip"), f"{key}.ip"),
                gateway=parse_ip(gw, f"{key}.gateway") if gw else None,
            )
        )
        routes.extend(parse_route(r, f"{key}.routes[]") for r in _list(block.get("routes"), key))
    return Result(version, (), tuple(ips), tuple(routes), parse_dns(obj.get("dns")))


def _parse_interface(obj: Any, modern: bool) -> Interface:
    i = _obj(obj, "interfaces[]")
    if not modern:  # libcni's 0.3.x/0.4.0 interface type has no 1.1 fields: they are dropped
        i = {k: v for k, v in i.items() if k in ("name", "mac", "sandbox")}
    return Interface(
        name=_str(i, "name", "interfaces[]"),
        mac=_str(i, "mac", "interfaces[]"),
        sandbox=_str(i, "sandbox", "interfaces[]"),
        mtu=_opt_int(i, "mtu", "interfaces[]") or None,
        socket_path=_str(i, "socketPath", "interfaces[]"),
        pci_id=_str(i, "pciID", "interfaces[]"),
    )


def _parse_ip(obj: Any) -> IPConfig:
    i = _obj(obj, "ips[]")
    gw = i.get("gateway")
    return IPConfig(
        address=parse_address(i.get("address"), "ips[].address"),
        gateway=parse_ip(gw, "ips[].gateway") if gw else None,
        interface=_opt_int(i, "interface", "ips[]"),
    )


def parse_result(obj: Mapping[str, Any], version: str) -> Result:
    """Any supported version into the internal model; `version` when it has no cniVersion."""
    obj = _obj(obj, "result")
    declared = obj.get("cniVersion") or version
    if declared not in SUPPORTED_VERSIONS:
        raise DecodeError("unsupported result version", f'result cniVersion is "{declared}"')
    if declared in LEGACY_VERSIONS:
        return _parse_legacy(obj, declared)
    modern = declared not in STRUCT_VERSIONS
    interfaces = _list(obj.get("interfaces"), "interfaces")
    return Result(
        cni_version=declared,
        interfaces=tuple(_parse_interface(i, modern) for i in interfaces),
        ips=tuple(_parse_ip(i) for i in _list(obj.get("ips"), "ips")),
        routes=tuple(parse_route(r, "routes[]") for r in _list(obj.get("routes"), "routes")),
        dns=parse_dns(obj.get("dns")),
    )


def _dns_dict(dns: DNS) -> dict[str, Any]:
    fields = {"nameservers": list(dns.nameservers), "domain": dns.domain,
              "search": list(dns.search), "options": list(dns.options)}
    return {key: value for key, value in fields.items() if value}


def route_dict(route: Route, with_v11_fields: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(route.dst)}
    if route.gw is not None:
        out["gw"] = str(route.gw)
    if with_v11_fields:
        for key in ("mtu", "advmss", "priority"):  # Go int,omitempty
            if getattr(route, key):
                out[key] = getattr(route, key)
        for key in ("table", "scope"):  # Go *int,omitempty: 0 is kept
            if getattr(route, key) is not None:
                out[key] = getattr(route, key)
    return out


def _interface_dict(iface: Interface, with_v11_fields: bool) -> dict[str, Any]:
    fields = {"mac": iface.mac, "mtu": with_v11_fields and iface.mtu, "sandbox": iface.sandbox,
              "socketPath": with_v11_fields and iface.socket_path,
              "pciID": with_v11_fields and iface.pci_id}
    return {"name": iface.name, **{key: value for key, value in fields.items() if value}}


def _ip_dict(ip: IPConfig, with_version: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_version:
        out["version"] = str(ip.address.version)
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = str(ip.address)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    return out


def _legacy_dict(result: Result, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version}
    for family, key in ((4, "ip4"), (6, "ip6")):
        first = next((ip for ip in result.ips if ip.address.version == family), None)
        if first is None:
            continue
        block: dict[str, Any] = {"ip": str(first.address)}
        if first.gateway is not None:
            block["gateway"] = str(first.gateway)
        routes = [route_dict(r, False) for r in result.routes if r.dst.version == family]
        if routes:
            block["routes"] = routes
        out[key] = block
    if len(out) == 1:
        raise CniError("cannot convert: no valid IP addresses", f"result to version {version}")
    out["dns"] = _dns_dict(result.dns)
    return out


def result_dict(result: Result, version: str) -> dict[str, Any]:
    """The result as the JSON object of ``version`` (key order included)."""
    if version in LEGACY_VERSIONS:
        return _legacy_dict(result, version)
    modern = version not in STRUCT_VERSIONS
    out: dict[str, Any] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [_interface_dict(i, modern) for i in result.interfaces]
    if result.ips:
        out["ips"] = [_ip_dict(ip, with_version=not modern) for ip in result.ips]
    if result.routes:
        out["routes"] = [route_dict(r) for r in result.routes]
    dns = _dns_dict(result.dns)
    if dns or not modern:
        out["dns"] = dns
    return out


def render_result(result: Result, version: str) -> str:
    """JSON text as libcni prints it: 4-space indent, no trailing newline."""
    if isinstance(result, UnconvertedResult):
        return go_json({**result_dict(result, CURRENT_VERSION), "cniVersion": version},
                       sort_keys=True)
    modern = version not in LEGACY_VERSIONS + STRUCT_VERSIONS
    return go_json(result_dict(result, version), sort_keys=modern)
