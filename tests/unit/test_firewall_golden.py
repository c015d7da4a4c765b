"""Golden tests: planner output for the cases in tests/data/firewall/<case>/.

Each case directory holds ``input.json`` (owners, masquerade entries, port mappings, portmap
options) and one file per expected output:

- ``iptables-v4.restore`` / ``iptables-v6.restore``: what the iptables backend sends to
  ``iptables-restore --noflush`` on an empty nat table (masquerade block, then one block per owner
  of port mappings);
- ``nft-add.nft``: the nftables ADD batches (masquerade, then port mappings);
- ``nft-remove.nft``: the nftables removal batches for the same entries;
- ``iptables-error.txt`` / ``nft-error.txt`` instead, when that backend rejects the options.

Adding a case is adding a directory. Set CNI_BRIDGE_REGEN_GOLDEN=1 to (re)write expected files,
then review the diff.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.cni.errors import CniError
from cni_bridge.firewall.iptables import masq as ipt_masq
from cni_bridge.firewall.iptables import portmap as ipt_portmap
from cni_bridge.firewall.iptables.backend import _validate_ipt_options
from cni_bridge.firewall.iptables.save import NatState
from cni_bridge.firewall.model import (
    MasqEntry,
    Owner,
    PortmapOptions,
    PortMapping,
    group_by_owner,
    publishes_localhost,
)
from cni_bridge.firewall.nft import plan as nft_plan
from cni_bridge.firewall.nft import schema as nft_schema
from cni_bridge.firewall.nft.backend import _validate_nft_options

DATA = Path(__file__).resolve().parents[1] / "data" / "firewall"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "input.json").exists())
REGEN = os.environ.get("CNI_BRIDGE_REGEN_GOLDEN") == "1"


def _owner(raw: dict[str, Any]) -> Owner:
    return Owner(raw["network"], raw["container_id"], raw["ifname"])


def load_case(name: str) -> tuple[list[MasqEntry], list[PortMapping], PortmapOptions]:
    raw = json.loads((DATA / name / "input.json").read_text())
    masq = [MasqEntry.of(_owner(m), ipaddress.ip_interface(m["address"]))
            for m in raw["masquerade"]]
    mappings = [PortMapping(_owner(p), p["protocol"], p["host_port"],
                            ipaddress.ip_interface(p["container_ip"]), p["container_port"],
                            ipaddress.ip_address(p["host_ip"]) if p.get("host_ip") else None)
                for p in raw["portmappings"]]
    opts = raw.get("options", {})
    options = PortmapOptions(
        snat=opts.get("snat", True), masq_all=opts.get("masq_all", False),
        mark_masq_bit=opts.get("mark_masq_bit", 13),
        external_set_mark_chain=opts.get("external_set_mark_chain"),
        conditions_v4=tuple(opts.get("conditions_v4", ())),
        conditions_v6=tuple(opts.get("conditions_v6", ())))
    return masq, mappings, options


def render_iptables(masq: list[MasqEntry], mappings: list[PortMapping],
                    options: PortmapOptions, version: int) -> str:
    empty = NatState()
    blocks = [ipt_masq.plan_add_masquerade(empty, [e for e in masq if e.version == version])]
    blocks += [ipt_portmap.plan_add_portmappings(empty, owner, mine, version, options)
               for owner, mine in group_by_owner(mappings).items()]
    # Shared chains are made with `iptables -N` before the restore (see RestoreScript.shared).
    return "".join("".join(f"# before: -N {c}\n" for c in b.shared) + b.render() for b in blocks)


def render_nft_add(masq: list[MasqEntry], mappings: list[PortMapping],
                   options: PortmapOptions) -> str:
    batches = []
    if masq:
        planned = [p for e in masq for p in nft_plan.masq_elements(e)]
        skeleton = nft_schema.masq_table_lines(masq)
        batches.append(skeleton + nft_plan.plan_add(planned))
    if mappings:
        localnet = any(publishes_localhost(e, options) for e in mappings)
        skeleton = nft_schema.hostport_table_lines(options.conditions_v4, options.conditions_v6,
                                                localnet,
                                                nft_plan.hairpin_subnets(mappings, options))
        batches.append(skeleton + nft_plan.plan_add(nft_plan.portmap_elements(mappings, options)))
    return "".join("\n".join(b) + "\n" for b in batches)


def render_nft_remove(masq: list[MasqEntry], mappings: list[PortMapping]) -> str:
    batches = []
    for owner, entries in group_by_owner(masq).items():
        elements = [p.element for e in entries for p in nft_plan.masq_elements(e)]
        batches.append([f"# remove masquerade of {owner}",
                        *nft_plan.plan_tolerant_delete(elements)])
    for owner, pms in group_by_owner(mappings).items():
        batches.append([f"# remove port mappings of {owner}",
                        *nft_plan.plan_tolerant_delete(nft_plan.portmap_removal_elements(pms))])
    return "".join("\n".join(b) + "\n" for b in batches)


def render_case(name: str) -> dict[str, str]:
    masq, mappings, options = load_case(name)
    out: dict[str, str] = {}
    try:
        _validate_ipt_options(options)
        for version in (4, 6):
            out[f"iptables-v{version}.restore"] = render_iptables(masq, mappings, options, version)
    except CniError as exc:
        out["iptables-error.txt"] = f"{exc}\n"
    try:
        _validate_nft_options(options)
        out["nft-add.nft"] = render_nft_add(masq, mappings, options)
        out["nft-remove.nft"] = render_nft_remove(masq, mappings)
    except CniError as exc:
        out["nft-error.txt"] = f"{exc}\n"
    return out


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    rendered = render_case(case)
    directory = DATA / case
    if REGEN:
        for stale in directory.iterdir():
            if stale.name != "input.json" and stale.name not in rendered:
                stale.unlink()
        for filename, text in rendered.items():
            (directory / filename).write_text(text)
    expected = {p.name: p.read_text() for p in directory.iterdir() if p.name != "input.json"}
    assert sorted(expected) == sorted(rendered), f"{case}: expected files differ"
    for filename, text in rendered.items():
        assert text == expected[filename], f"{case}/{filename} differs"


def test_cases_exist() -> None:
    assert "reference-basic" in CASES
