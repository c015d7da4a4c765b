"""Result shape per cniVersion (REFERENCE.md §1.5, §2.2 step 4): interfaces [bridge, host veth,
container veth with sandbox], ips pointing at interface 2 with the gateway, routes; 0.2.0 in the
legacy ip4 shape. Every value is compared with the kernel."""

from __future__ import annotations

from typing import Any

from tests.integration.test_bridge_common import BRIDGE, GW4, Bench, bench, parallel
from tests.netns import Netns

__all__ = ["bench"]

VERSIONS = ("0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def mac_of(ns: Netns, dev: str) -> str:
    return str(ns.ip_json("link", "show", "dev", dev)[0]["address"])


def test_result_shape_per_version(bench: Bench) -> None:
    cs = [bench.make_ns(f"C{i}") for i in range(len(VERSIONS))]

    def add(i: int) -> dict[str, Any]:
        return bench.add(cs[i], bench.config(VERSIONS[i], isDefaultGateway=True), cid=f"c{i}")

    results = dict(zip(VERSIONS, parallel(add, range(len(VERSIONS))), strict=True))
    for version, c in zip(VERSIONS, cs, strict=True):
        result = results[version]
        assert result["cniVersion"] == version
        address = bench.addresses(c, "eth0")
        assert len(address) == 1
        if version == "0.2.0":
            assert set(result) <= {"cniVersion", "ip4", "dns"}, result
            assert result["ip4"]["ip"] == address[0]
            assert result["ip4"]["gateway"] == GW4
            assert result["ip4"]["routes"] == [{"dst": "0.0.0.0/0", "gw": GW4}]
            continue
        bridge, veth, cont = result["interfaces"]
        assert bridge == {"name": BRIDGE, "mac": mac_of(bench.host, BRIDGE)}
        assert veth == {"name": veth["name"], "mac": mac_of(bench.host, veth["name"])}
        assert bench.links(bench.host)[veth["name"]]["master"] == BRIDGE
        assert cont == {"name": "eth0", "mac": mac_of(c, "eth0"), "sandbox": c.path}
        ip: dict[str, Any] = {"address": address[0], "gateway": GW4, "interface": 2}
        if version < "1.0.0":
            ip["version"] = "4"
        assert result["ips"] == [ip]
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GW4}]
        assert result.get("dns", {}) == {}
    # Each version's ADD wired a working container.
    ips = sorted(a for c in cs for a in bench.addresses(c, "eth0"))
    assert len(set(ips)) == len(VERSIONS)
