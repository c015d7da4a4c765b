"""The firewall entries our own records describe (``cni_bridge.records``): what an ADD
installed, for removing it by key (a DEL without prevResult or port mappings), checking it
(``status``) and putting it back (``reconcile``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from cni_bridge import records
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping


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
    o = rec.data.get("options") or {}
    options = PortmapOptions(
        snat=bool(_opt(o, "snat", "snat", True)),
        masq_all=bool(_opt(o, "masqAll", "masq_all", False)),
        mark_masq_bit=int(_opt(o, "markMasqBit", "mark_masq_bit", 13)),
        external_set_mark_chain=_opt(o, "externalSetMarkChain", "external_set_mark_chain", None),
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
