"""The bridge's masquerade under the shared firewall policy, with fake backends (no root):
GC goes on past a failing backend, DEL without a record cleans every usable backend."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from cni_bridge.bridge.plugin import BridgePlugin
from cni_bridge.cni.dispatch import dispatch
from cni_bridge.cni.errors import CniError
from cni_bridge.cni.result import IPInterface
from cni_bridge.firewall import policy
from cni_bridge.firewall.model import Owner
from cni_bridge.node import records

A, B = Owner("net", "a", "eth0"), Owner("net", "b", "eth0")


@dataclass
class FakeBackend:
    name: str
    fail: CniError | None = None
    collected: list[list[Owner]] = field(default_factory=list)
    removed: list[Owner] = field(default_factory=list)

    def available(self) -> bool:
        return True

    def gc_masquerade(self, network: str, valid_owners: Collection[Owner]) -> list[str]:
        self.collected.append(sorted(valid_owners))
        if self.fail:
            raise self.fail
        return [f"masquerade of {network}/stale"]

    def remove_masquerade(self, owner: Owner, addresses: Sequence[IPInterface] | None) -> None:
        self.removed.append(owner)
        if self.fail:
            raise self.fail


@pytest.fixture
def backends(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeBackend]:
    fakes = {name: FakeBackend(name) for name in ("nftables", "iptables")}
    monkeypatch.setattr(policy, "make_backend", lambda name, runner, **_: fakes[name])
    monkeypatch.setattr(policy, "recorded_backend",
                        lambda name, runner: fakes.get(str(name)))
    return fakes


def call(command: str, extra: dict[str, Any], cid: str = "a") -> tuple[int, Any]:
    config = {"cniVersion": "1.1.0", "name": "net", "type": "bridge", "ipMasq": True, **extra}
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "",
               "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
    out = dispatch("bridge", "test", environ, lambda: json.dumps(config).encode(), BridgePlugin)
    return out.exit_code, json.loads(out.stdout) if out.stdout else None


def test_gc_goes_on_past_a_failing_backend_and_reports_it(
        backends: dict[str, FakeBackend]) -> None:
    """One backend failing stops no other (the bridge used to stop at the first failure)."""
    root = records.state_root()
    for owner in (A, B):
        records.save_record(root, records.Record(owner.network, owner.container_id,
                                                 owner.ifname, "bridge", {}))
    backends["nftables"].fail = CniError("nft said no")
    valid = {"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    rc, out = call("GC", valid)
    assert rc == 1 and out["msg"] == "GC could not remove everything"
    assert out["details"] == ("firewall: GC of the masquerade rules of network net failed: "
                              "nftables: nft said no")
    assert backends["iptables"].collected == backends["nftables"].collected == [[A]]
    kept = records.list_records(root, "net")
    assert [(r.container_id, r.plugin) for r in kept] == [("a", "bridge")]


def test_del_without_a_record_cleans_every_usable_backend(
        backends: dict[str, FakeBackend]) -> None:
    assert call("DEL", {"ipMasqBackend": "iptables"}) == (0, None)
    assert backends["iptables"].removed == backends["nftables"].removed == [A]


def test_del_with_a_record_removes_with_the_recorded_backend_only(
        backends: dict[str, FakeBackend]) -> None:
    records.save_record(records.state_root(), records.Record(
        "net", "a", "eth0", "bridge", {"masq": [], "backend": "iptables"}))
    assert call("DEL", {}) == (0, None)
    assert backends["iptables"].removed == [A] and backends["nftables"].removed == []
    assert list(records.list_records(records.state_root(), "net")) == []


def test_del_reports_every_backend_that_failed(backends: dict[str, FakeBackend]) -> None:
    for backend in backends.values():
        backend.fail = CniError(f"{backend.name} said no")
    rc, out = call("DEL", {})
    assert rc == 1 and "masquerade: cannot remove masquerade rules of" in out["details"]
    assert "nftables: nftables said no; iptables: iptables said no" in out["details"]
