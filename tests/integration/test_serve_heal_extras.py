"""Isolation (``isolateNetworks``) and the spoof check (``ipspoofchk``) come back after a firewall
flush: the bridge records them, and the resident server's healer or ``cni-bridge reconcile``
puts them back, whatever the masquerade backend (both are nftables rules).

Networks "iso1" (br-iso1, 10.81.0.0/24, container A) and "iso2" (br-iso2, 10.82.0.0/24,
container B), both isolated, spoof-checked and masqueraded. After ``nft flush ruleset`` A
reaches B (the hole), CHECK reports the missing rules; once restored, CHECK passes again (the
rules are read back), A no longer reaches B and still reaches its gateway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import STATE_ENV
from tests.integration.test_bridge_common import Bench, bench, first_ip, ping
from tests.integration.test_reliability_common import BACKENDS
from tests.integration.test_serve_common import Resident, resident, wait_for
from tests.netns import PLUGIN_PATH

__all__ = ["bench", "resident"]

GW1 = "10.81.0.1"


def network(bench: Bench, n: int, backend: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": f"iso{n}", "type": "bridge",
            "bridge": f"br-iso{n}", "isGateway": True, "isDefaultGateway": True,
            "ipMasq": True, "ipMasqBackend": backend, "isolateNetworks": True,
            "ipspoofchk": True,
            "ipam": {"type": "host-local", "dataDir": str(bench.data_dir),
                     "ranges": [[{"subnet": f"10.8{n}.0.0/24"}]]}}


@pytest.mark.parametrize("by", ["healer", "reconcile"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_isolation_and_spoof_check_come_back_after_a_flush(
        backend: str, by: str, bench: Bench, resident: Callable[..., Resident]) -> None:
    server = resident(use=False) if by == "healer" else None
    net1, net2 = network(bench, 1, backend), network(bench, 2, backend)
    a, b = bench.make_ns("A"), bench.make_ns("B")
    ra, rb = bench.add(a, net1, cid="a"), bench.add(b, net2, cid="b")
    ip_b = first_ip(rb)
    assert ping(a, GW1, ip_b, timeout=1) == {GW1: True, ip_b: False}

    bench.host.run("nft", "flush", "ruleset")
    if server is None:
        assert ping(a, ip_b, timeout=1) == {ip_b: True}  # the hole a flush leaves
        assert "missing" in bench.fails("CHECK", a, net1, cid="a", prev=ra)["text"]
        assert not bench.host.run("nft", "list", "table", "bridge", "nat", check=False).stdout
        out = bench.host.run(str(bench.plugin_dir / "cni-bridge"), "reconcile",
                             env={"PATH": PLUGIN_PATH, STATE_ENV: os.environ[STATE_ENV]}).stdout
        assert "2 record(s)" in out and "2 restored" in out, out  # the two bridge records
    else:
        wait_for(lambda: bench.call("CHECK", a, net1, cid="a", prev=ra).rc == 0,
                 "the healer to restore A's rules", 30)
        report = (server.status() or {})["last_restore"]
        assert report["errors"] == [] and not report["failed"], report
    for ns, cfg, cid, prev in ((a, net1, "a", ra), (b, net2, "b", rb)):
        bench.ok("CHECK", ns, cfg, cid=cid, prev=prev)  # masquerade, spoof check, isolation
    assert ping(a, GW1, ip_b, timeout=1) == {GW1: True, ip_b: False}
    for ns, cfg, cid, prev in ((a, net1, "a", ra), (b, net2, "b", rb)):
        bench.ok("DEL", ns, cfg, cid=cid, prev=prev)
