"""The firewall entries our records describe: for DEL by key, ``status`` and ``reconcile``.

A bridge record's ``spoofcheck`` and ``isolate`` are nftables rules whatever its ``backend``;
older records lack them, meaning none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from cni_bridge.firewall.model import MasqEntry, Owner, Pin, PortmapOptions, PortMapping, SpoofEntry
from cni_bridge.node import records

TYPE_CHECKING = False
if TYPE_CHECKING:  # the portmap plugin reads records too: it never loads the spoof check
    from cni_bridge.firewall.commands import CommandRunner

UNNAMED_BACKEND = "nftables"  # the backend of a record that names none
NFT_ONLY = "nftables"  # spoof check and isolation are nftables rules, whatever the backend


def backend_of(rec: records.Record) -> str:
    return str(rec.data.get("backend") or UNNAMED_BACKEND)


def has_nft_only_rules(rec: records.Record) -> bool:
    """A spoof check or isolation recorded: rules under NFT_ONLY, whatever the record's backend."""
    return bool(rec.data.get("spoofcheck") or rec.data.get("isolate"))


def record_owner(rec: records.Record) -> Owner:
    return Owner(rec.network, rec.container_id, rec.ifname)


def masq_entries(rec: records.Record) -> list[MasqEntry]:
    return [MasqEntry(record_owner(rec), ipaddress.ip_interface(e["address"]),
                      ipaddress.ip_network(e.get("subnet") or e["address"], strict=False),
                      tuple(ipaddress.ip_network(n) for n in e.get("nonMasquerade") or ()))
            for e in rec.data.get("masq", [])]


def _opt(options: Mapping[str, Any], camel: str, snake: str, default: Any) -> Any:
    return options.get(camel, options.get(snake, default))


def port_entries(rec: records.Record) -> tuple[list[PortMapping], PortmapOptions]:
    o, d = rec.data.get("options") or {}, PortmapOptions()  # d: the defaults
    options = PortmapOptions(
        snat=bool(_opt(o, "snat", "snat", d.snat)),
        masq_all=bool(_opt(o, "masqAll", "masq_all", d.masq_all)),
        mark_masq_bit=int(_opt(o, "markMasqBit", "mark_masq_bit", d.mark_masq_bit)),
        external_set_mark_chain=_opt(o, "externalSetMarkChain", "external_set_mark_chain",
                                     d.external_set_mark_chain),
        conditions_v4=tuple(_opt(o, "conditionsV4", "conditions_v4", ()) or ()),
        conditions_v6=tuple(_opt(o, "conditionsV6", "conditions_v6", ()) or ()),
    )
    mappings = [
        PortMapping(record_owner(rec), str(m.get("protocol", "tcp")).lower(),  # type: ignore[arg-type]
                    int(m["hostPort"]), ipaddress.ip_interface(m["containerIP"]),
                    int(m["containerPort"]),
                    ipaddress.ip_address(m["hostIP"]) if m.get("hostIP") else None)
        for m in rec.data.get("mappings", [])
    ]
    return mappings, options


def spoof_record_data(host_veth: str, mac: str, pin: Pin | None) -> dict[str, Any]:
    data: dict[str, Any] = {"hostVeth": host_veth, "mac": mac}
    if pin is not None:
        data["pin"] = {"mac": pin.mac, "ipv4": [str(a) for a in pin.ipv4],
                       "ipv6": [str(a) for a in pin.ipv6]}
    return data


def spoof_entry(rec: records.Record) -> SpoofEntry | None:
    data = rec.data.get("spoofcheck")
    if not data:
        return None
    pin = data.get("pin")
    return SpoofEntry(record_owner(rec), str(data["hostVeth"]), str(data["mac"]), None if not pin
                      else Pin(str(pin["mac"]),
                               tuple(ipaddress.IPv4Address(a) for a in pin.get("ipv4", ())),
                               tuple(ipaddress.IPv6Address(a) for a in pin.get("ipv6", ()))))


def isolated_bridges(rec: records.Record) -> list[str]:
    return [str(name) for name in rec.data.get("isolate") or ()]


def add_isolation(runner: CommandRunner, bridges: Sequence[str]) -> None:
    from cni_bridge.firewall.nft.isolation import ensure_isolated

    ensure_isolated(runner, bridges)


def add_spoofchecks(runner: CommandRunner, entries: Sequence[SpoofEntry]) -> None:
    from cni_bridge.firewall.nft.spoofcheck import restore_jumpless

    restore_jumpless(runner, entries)


def missing_extras(runner: CommandRunner, rec: records.Record) -> list[str]:
    from cni_bridge.firewall.nft import isolation, spoofcheck

    missing = []
    spoof = spoof_entry(rec)
    if spoof is not None:
        missing += spoofcheck.check_spoofcheck(runner, rec.container_id, rec.ifname,
                                               spoof.pin is not None)
    bridges = isolated_bridges(rec)
    if bridges:
        missing += isolation.check_isolated(runner, bridges)
    return missing


def restore_extras(runner: CommandRunner, rec: records.Record) -> None:
    """A spoof check with anything missing is rewritten whole."""
    from cni_bridge.firewall.nft import isolation, spoofcheck

    spoof = spoof_entry(rec)
    if spoof is not None and spoofcheck.check_spoofcheck(runner, rec.container_id, rec.ifname,
                                                         spoof.pin is not None):
        spoofcheck.remove_spoofcheck(runner, rec.container_id, rec.ifname)
        spoofcheck.add_spoofcheck(runner, rec.container_id, rec.ifname, spoof.host_veth,
                                  spoof.mac, spoof.pin)
    bridges = isolated_bridges(rec)
    if bridges:
        isolation.ensure_isolated(runner, bridges)
