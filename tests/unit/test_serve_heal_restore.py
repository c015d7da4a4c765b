"""The healer's restore without root: one owner per key (the newer record wins), chunks of a
few hundred entries per transaction, a bad entry isolated within a bounded number of
transactions, and the retry timing after a failure (injected clock)."""

from __future__ import annotations

import json
import os
import selectors
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.nft.backend import skeleton_of
from cni_bridge.node import records
from cni_bridge.serve.server import heal, restore
from cni_bridge.serve.server.backoff import MAX_DELAY, Backoff
from cni_bridge.serve.server.health import Health
from cni_bridge.serve.server.view import RecordsView, ServerView


def masq(address: str) -> dict[str, object]:
    return {"backend": "nftables", "masq": [{"address": address, "subnet": "10.1.0.0/16"}]}


def port(address: str, host_port: int) -> dict[str, object]:
    return {"backend": "nftables", "options": {"snat": True},
            "mappings": [{"protocol": "tcp", "hostPort": host_port, "containerIP": address,
                          "containerPort": 80}]}


def save(root: Path, cid: str, plugin: str, data: dict[str, object], mtime: int = 0) -> None:
    records.save_record(root, records.Record("n", cid, "eth0", plugin, data))
    if mtime:
        os.utime(root / "n" / f"{cid}.eth0.{plugin}.json", (mtime, mtime))


def address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 2}/16"


@dataclass
class Nft:
    """`nft` as a runner, the table flushed: every batch succeeds unless it holds one of
    `poison` (then it fails, as the kernel fails a whole transaction); once one went in, the
    skeleton the records of `root` need is there."""

    root: Path
    poison: tuple[str, ...] = ()
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append((tuple(argv), input))
        if list(argv[:3]) == ["nft", "-f", "-"]:
            bad = any(p in (input or "") for p in self.poison)
            return CommandResult(tuple(argv), 1 if bad else 0, "", "Error: File exists")
        if list(argv[:4]) == ["nft", "-j", "-t", "list"] and self.committed():
            return CommandResult(tuple(argv), 0, self.skeleton(), "")
        return CommandResult(tuple(argv), 1, "", "No such file or directory")

    def skeleton(self) -> str:
        needs = restore.needs_of(records.list_records(self.root))["nftables"]
        chains = skeleton_of(needs)[0]
        rules = [{"rule": {"family": "inet", "table": "cni_bridge", "chain": c.name,
                           "handle": i}} for c in chains for i, _ in enumerate(c.rules)]
        return json.dumps({"nftables": [{"map": {"name": m}} for m in skeleton_of(needs)[1]]
                           + [{"chain": {"name": c.name}} for c in chains] + rules})

    def batches(self) -> list[str]:
        return [text or "" for argv, text in self.calls if argv[:3] == ("nft", "-f", "-")]

    def committed(self) -> str:
        """Every batch text that went in (the failing ones did not)."""
        return "\n".join(b for b in self.batches() if not any(p in b for p in self.poison))


# --- one owner per key -------------------------------------------------------------------------


def test_two_records_claiming_one_address_the_newer_wins_and_the_other_is_named(
        tmp_path: Path) -> None:
    save(tmp_path, "old", "bridge", masq("10.1.0.5/16"), mtime=1_000)
    save(tmp_path, "new", "bridge", masq("10.1.0.5/16"), mtime=2_000)
    save(tmp_path, "old", "portmap", port("10.1.0.5/16", 8080), mtime=1_000)
    save(tmp_path, "other", "portmap", port("10.1.0.9/16", 8080), mtime=3_000)
    needs = restore.needs_of(records.list_records(tmp_path), tmp_path)["nftables"]
    assert [e.owner.container_id for e in needs.masq] == ["new"]
    assert [m.owner.container_id for ms in needs.ports.values() for m in ms] == ["other"]
    assert len(needs.conflicts) == 2
    assert "masquerade of 10.1.0.5 of container old (n/eth0) (record n/old.eth0.bridge) " \
           "not restored: the newer record n/new.eth0.bridge" in needs.conflicts[0]
    assert "host port *:8080/tcp" in needs.conflicts[1] and "n/other" in needs.conflicts[1]


def test_one_owner_claiming_its_keys_twice_is_no_conflict(tmp_path: Path) -> None:
    save(tmp_path, "c", "bridge", masq("10.1.0.5/16"))
    save(tmp_path, "c", "portmap", {**port("10.1.0.5/16", 8080), "mappings": [
        {"protocol": "tcp", "hostPort": 8080, "containerIP": "10.1.0.5/16", "containerPort": 80},
        {"protocol": "udp", "hostPort": 8080, "containerIP": "10.1.0.5/16", "containerPort": 80},
    ]})
    needs = restore.needs_of(records.list_records(tmp_path), tmp_path)["nftables"]
    assert needs.conflicts == [] and len(needs.masq) == 1
    assert sum(len(m) for m in needs.ports.values()) == 2


def test_a_restore_with_conflicting_records_goes_in_and_names_the_loser(tmp_path: Path) -> None:
    save(tmp_path, "old", "bridge", masq("10.1.0.5/16"), mtime=1_000)
    save(tmp_path, "new", "bridge", masq("10.1.0.5/16"), mtime=2_000)
    nft = Nft(tmp_path)
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["failed"] is False and report["transactions"] == 1
    (batch,) = nft.batches()
    assert batch.count("masq_owner4 { 10.1.0.5 ") == 1  # one value per key in the transaction
    assert report["errors"] and "container old" in report["errors"][0]


# --- chunks ------------------------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 50 entries (500 in production): the same arithmetic with fewer records."""
    monkeypatch.setattr(restore, "CHUNK", 50)
    return 50


def test_many_records_go_in_a_few_chunks(tmp_path: Path, small_chunks: int) -> None:
    for i in range(120):
        save(tmp_path, f"c{i}", "bridge", masq(address(i)))
        save(tmp_path, f"c{i}", "portmap", port(address(i), 10_000 + i))
    nft = Nft(tmp_path)
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["failed"] is False and report["errors"] == []
    assert report["restored"] == 240
    assert report["transactions"] == 6 == len(nft.batches())  # 3 masquerade, 3 port chunks
    committed = nft.committed()
    assert all(f"10.1.0.{i + 2} " in committed for i in range(120))
    assert all(f"tcp . {10_000 + i} " in committed for i in range(120))


def test_a_bad_entry_is_isolated_in_a_bounded_number_of_transactions(
        tmp_path: Path, small_chunks: int) -> None:
    for i in range(100):
        save(tmp_path, f"c{i}", "bridge", masq(address(i)))
    nft = Nft(tmp_path, poison=("10.1.0.59 ",))  # address(57)
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["failed"] is True
    assert report["errors"] == ["cannot restore masquerade of 10.1.0.59 of container c57 "
                                "(n/eth0): cannot add masquerade to nft table inet "
                                "cni_bridge: nft -f -: exit 1: Error: File exists"]
    assert report["transactions"] <= 2 + 2 * 6  # two chunks, one halved down to one entry
    committed = nft.committed()
    assert all(f"10.1.0.{i + 2} " in committed for i in range(100) if i != 57)


def test_isolation_stops_at_its_budget_and_reports_the_rest_whole(
        tmp_path: Path, small_chunks: int) -> None:
    for i in range(400):
        save(tmp_path, f"c{i}", "bridge", masq(address(i)))
    nft = Nft(tmp_path, poison=("masq_owner4",))  # every batch fails
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["failed"] is True and report["restored"] == 400
    assert report["transactions"] == 8 + restore.ISOLATION_BUDGET
    assert any(e.startswith("cannot restore 50 entries from masquerade of") for e
               in report["errors"])


# --- backoff (pure timing) ---------------------------------------------------------------------


def test_backoff_doubles_to_its_ceiling_and_resets_after_success() -> None:
    b = Backoff()
    assert b.when(0.0) == 0.0 and not b.active
    waits = [b.failed(t) for t in (10.0, 20.0, 30.0, 40.0)]
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert b.when(47.9) == 48.0 and b.when(48.0) == 48.0 and b.when(41.0) == 48.0
    for _ in range(20):
        b.failed(100.0)
    assert b.delay == MAX_DELAY and b.when(100.0) == 100.0 + MAX_DELAY
    assert b.succeeded() == 24 and b.when(100.0) == 100.0
    assert b.failed(200.0) == 1.0


def test_a_slow_failing_restore_waits_ten_times_as_long_as_it_took() -> None:
    b = Backoff()
    assert b.failed(0.0, took=3.0) == 30.0  # not 1 s: it would run a third of the time
    assert b.failed(33.0, took=3.0) == 60.0  # then doubling
    assert b.failed(96.0, took=0.1) == 120.0
    b.records_changed()
    assert b.when(96.5) == 96.0 + 1.0  # one first step (of the fast one) after it
    assert b.failed(200.0, took=60.0) == MAX_DELAY


def test_a_records_change_shortens_the_wait_but_never_below_the_first_step() -> None:
    b = Backoff()
    for t in (0.0, 1.0, 3.0, 7.0):
        b.failed(t)
    assert b.when(7.5) == 15.0
    b.records_changed()
    assert b.when(7.5) == 8.0 and b.when(7.0) == 8.0  # one step after the last failure
    assert b.failed(8.0) == 1.0  # the doubling starts over


FAILED = {"trigger": "change: nftables", "failed": True, "missing": ["nft table gone"],
          "restored": 3, "remaining": [], "errors": ["cannot restore host port *:80/tcp"]}
GOOD = {"trigger": "change: nftables", "failed": False, "missing": ["nft table gone"],
        "restored": 3, "remaining": [], "errors": []}


def test_the_healer_backs_off_logs_once_and_ignores_notifications_meanwhile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    view = ServerView("s", "d", 1, RecordsView(tmp_path))
    with selectors.DefaultSelector() as sel:
        health = Health(view, sel, None, 30.0, lambda: None)
        started: list[float] = []
        monkeypatch.setattr(health, "_start", lambda: setattr(health, "due", None))
        now = 1000.0
        for attempt in range(6):
            health.on_time(now)
            health.due = None
            health._judge(json.loads(json.dumps(FAILED)), now)
            started.append(now)
            health.schedule("change: nftables", now + 0.05)  # a burst of notifications
            health.schedule("change: nftables", now + 0.2)
            assert health.due == now + 2 ** attempt  # the retry, not the notification
            now = health.due
        assert [b - a for a, b in zip(started, started[1:], strict=False)] == [1, 2, 4, 8, 16]
        errors = [line for line in capsys.readouterr().err.splitlines()
                  if "cannot restore" in line]
        assert errors == ["cni-bridge WARNING: health check: cannot restore host port *:80/tcp"]
        health.due = None
        health._judge(json.loads(json.dumps(FAILED)), now)
        health.schedule("signal", now + 0.01)  # an operator's SIGHUP does not wait
        assert health.due == now + 0.01
        health._judge(dict(GOOD), now)
        assert not health.backoff.active
        assert "restored after 7 failed attempt(s)" in capsys.readouterr().err
        health.due = None
        health.schedule("change: nftables", now + 0.05)
        assert health.due == now + 0.05


# --- spoof check and isolation -----------------------------------------------------------------

SPOOF = {"hostVeth": "veth0a0b0c0d", "mac": "02:00:00:00:00:05",
         "pin": {"mac": "02:00:00:00:00:05", "ipv4": ["10.1.0.5"], "ipv6": ["fe80::5"]}}


def test_spoof_check_and_isolation_are_read_from_the_bridge_record(tmp_path: Path) -> None:
    save(tmp_path, "c", "bridge", {**masq("10.1.0.5/16"), "backend": "iptables",
                                   "spoofcheck": SPOOF, "isolate": ["br0", "br0.100"]})
    save(tmp_path, "old", "bridge", masq("10.1.0.6/16"))  # written before they were recorded
    needs = restore.needs_of(records.list_records(tmp_path), tmp_path)
    assert len(needs["iptables"].masq) == 1 and needs["iptables"].spoof == []
    nft = needs["nftables"]  # nftables rules, whatever the masquerade backend
    (spoof,) = nft.spoof
    assert (spoof.owner.container_id, spoof.host_veth, spoof.mac) == ("c", "veth0a0b0c0d",
                                                                      SPOOF["mac"])
    assert spoof.pin is not None and [str(a) for a in spoof.pin.ipv4] == ["10.1.0.5"]
    assert nft.isolate == ["br0", "br0.100"] and [e.owner.container_id for e in nft.masq] == [
        "old"]


def test_a_stale_spoof_check_never_lands_on_a_veth_name_given_out_again(tmp_path: Path) -> None:
    save(tmp_path, "gone", "bridge", {"spoofcheck": {**SPOOF, "mac": "02:00:00:00:00:99"}},
         mtime=1_000)
    save(tmp_path, "now", "bridge", {"spoofcheck": SPOOF}, mtime=2_000)
    needs = restore.needs_of(records.list_records(tmp_path), tmp_path)["nftables"]
    assert [e.owner.container_id for e in needs.spoof] == ["now"]
    assert "spoof check of veth0a0b0c0d of container gone" in needs.conflicts[0]


def test_a_flushed_spoof_check_and_isolation_are_restored(tmp_path: Path) -> None:
    # An iptables masquerade backend: its spoof check and isolation are nftables rules still.
    save(tmp_path, "c", "bridge", {"backend": "iptables", "masq": [], "spoofcheck": SPOOF,
                                   "isolate": ["br0"]})
    nft = Nft(tmp_path)
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["missing"] == ["nft table inet cni_bridge is missing",
                                 "nft chain bridge nat PREROUTING lacks the spoof check of 1 "
                                 "attachment(s)"]
    isolation, spoof = nft.batches()
    assert 'add element inet cni_bridge isolated_bridges { "br0" }' in isolation
    assert 'iifname "veth0a0b0c0d" jump cni-br-iface-c-eth0' in spoof
    assert 'ipspoofchk-c-eth0: ipv4 source' in spoof
    assert report["transactions"] == 2 and report["errors"] == []
