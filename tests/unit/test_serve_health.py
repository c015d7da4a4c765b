"""The health watcher without root: which notifications matter, the skeleton checks (pure), and
the check-and-restore driven through a scripted command runner."""

from __future__ import annotations

import json
import selectors
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.iptables.backend import shared_missing as ipt_missing
from cni_bridge.firewall.iptables.save import parse_save
from cni_bridge.firewall.nft.backend import shared_missing as nft_missing
from cni_bridge.firewall.nft.backend import skeleton_of
from cni_bridge.firewall.nft.state import Chain, Listing
from cni_bridge.node import records
from cni_bridge.serve.server import heal, restore, watch

# --- notifications -----------------------------------------------------------------------------


def message(kind: int, family: int, table: str, subsystem: int = 10) -> bytes:
    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name
    attr += b"\0" * (-len(attr) % 4)
    payload = bytes([family, 0, 0, 0]) + attr
    return struct.pack("=IHHII", 16 + len(payload), (subsystem << 8) | kind, 0, 0, 0) + payload


def test_deletions_in_our_tables_are_noticed() -> None:
    batch = message(2, 1, "cni_bridge") + message(8, 2, "nat") + message(8, 10, "nat")
    assert watch.backends_touched(batch) == {"nftables", "iptables"}


def test_the_spoof_checks_bridge_table_concerns_the_nftables_watch() -> None:
    assert watch.backends_touched(message(5, 7, "nat")) == {"nftables"}  # DELCHAIN, bridge nat
    assert watch.backends_touched(message(5, 7, "filter")) == set()


def test_a_deleted_table_is_told_apart_from_a_deleted_chain() -> None:
    lost: set[str] = set()
    assert watch.backends_touched(message(5, 1, "cni_bridge"), lost) == {"nftables"}
    assert lost == set()  # a chain: the skeleton check sees it
    watch.backends_touched(message(2, 1, "cni_bridge") + message(26, 2, "nat"), lost)
    assert lost == {"nftables", "iptables"}  # DELTABLE, DESTROYTABLE


def test_element_churn_additions_and_other_tables_are_not() -> None:
    batch = b"".join([
        message(14, 1, "cni_bridge"),  # DELSETELEM: what every DEL does
        message(12, 1, "cni_bridge"),  # NEWSETELEM: every ADD
        message(6, 2, "nat"),  # NEWRULE
        message(2, 1, "firewalld"),  # someone else's table
        message(2, 2, "cni_bridge"),  # our name, wrong family
        message(2, 1, "cni_bridge", subsystem=11),  # not nftables
        message(15, 0, ""),  # NEWGEN
    ])
    assert watch.backends_touched(batch) == set()


def test_a_truncated_message_ends_parsing_quietly() -> None:
    good = message(2, 1, "cni_bridge")
    assert watch.backends_touched(good + good[:10]) == {"nftables"}
    assert watch.backends_touched(struct.pack("=IHHII", 3, 0, 0, 0, 0)) == set()


# --- skeleton (pure) ---------------------------------------------------------------------------


def test_nft_skeleton() -> None:
    from cni_bridge.firewall.nft.schema import masq_chain

    spec = masq_chain()
    assert nft_missing(None, [spec], []) == ["nft table inet cni_bridge is missing"]
    whole = Listing(maps=frozenset({"masq_owner4"}),
                    chains={spec.name: Chain(spec.name, "postrouting", len(spec.rules))})
    assert nft_missing(whole, [spec], ["masq_owner4"]) == []
    other_conditions = Listing(maps=whole.maps,
                               chains={spec.name: Chain(spec.name, "postrouting", 99)})
    assert nft_missing(other_conditions, [spec], ["masq_owner4"]) == []
    flushed = Listing(chains={spec.name: Chain(spec.name, "postrouting", 0)})
    assert nft_missing(flushed, [spec], ["masq_owner4"]) == [
        "nft map inet cni_bridge masq_owner4 is missing",
        f"nft chain inet cni_bridge {spec.name} has no rules"]


NAT_WHOLE = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-0123456789abcdef01234567 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.1.0.2/32 -j CNI-0123456789abcdef01234567
COMMIT
"""


def test_ipt_skeleton() -> None:
    assert ipt_missing(parse_save(NAT_WHOLE), 4, True, True, True) == []
    flushed = "\n".join(line for line in NAT_WHOLE.splitlines() if not line.startswith("-A"))
    missing = ipt_missing(parse_save(flushed), 4, True, True, True)
    assert len(missing) == 4
    assert missing[0] == "IPv4 nat POSTROUTING jumps to no masquerade chain"
    assert ipt_missing(parse_save(flushed), 4, False, False, False) == []


# --- check and restore -------------------------------------------------------------------------

BRIDGE = {"backend": "nftables", "masq": [{"address": "10.1.0.2/24", "subnet": "10.1.0.0/24"}]}
PORTMAP = {"backend": "nftables",
           "mappings": [{"protocol": "tcp", "hostPort": 8080, "containerIP": "10.1.0.2/24",
                         "containerPort": 80}],
           "options": {"snat": True}}


@dataclass
class FakeNft:
    """`nft` as a runner: the terse listing says whether the table exists."""

    table: bool
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append((tuple(argv), input))
        if list(argv[:4]) == ["nft", "-j", "-t", "list"]:
            return CommandResult(tuple(argv), 0 if self.table else 1,
                                 self.listing() if self.table else "", "No such file")
        if list(argv[:3]) == ["nft", "-f", "-"]:
            self.table = True
            return CommandResult(tuple(argv), 0)
        return CommandResult(tuple(argv), 1, "", "unexpected")

    def listing(self) -> str:
        needs = restore.needs_of(records.list_records(self.root))["nftables"]
        specs, names = skeleton_of(needs)
        chains = [{"chain": {"name": c.name}} for c in specs]
        rules = [{"rule": {"family": "inet", "table": "cni_bridge", "chain": c.name,
                           "handle": i}} for c in specs for i, _ in enumerate(c.rules)]
        maps = [{"map": {"name": m}} for m in names]
        return json.dumps({"nftables": maps + chains + rules})

    root: Path = Path()

    def batches(self) -> list[str]:
        return [text or "" for argv, text in self.calls if argv[:3] == ("nft", "-f", "-")]


def populate(root: Path, count: int) -> None:
    for i in range(count):
        for plugin, data in (("bridge", BRIDGE), ("portmap", PORTMAP)):
            addr = f"10.1.0.{i + 2}/24"
            rec = json.loads(json.dumps(data).replace("10.1.0.2/24", addr).replace(
                "8080", str(8080 + i)))
            records.save_record(root, records.Record("n", f"c{i}", "eth0", plugin, rec))


def test_a_whole_skeleton_costs_one_listing_whatever_the_number_of_records(
        tmp_path: Path) -> None:
    populate(tmp_path, 50)
    nft = FakeNft(table=True, root=tmp_path)
    report = heal.check(tmp_path, "periodic", nft)
    assert report["missing"] == [] and report["restored"] == 0 and report["errors"] == []
    assert report["records"] == 100
    assert [argv[:4] for argv, _ in nft.calls] == [("nft", "-j", "-t", "list")]


def test_a_lost_table_is_restored_in_one_batch_per_option_set(tmp_path: Path) -> None:
    populate(tmp_path, 50)
    nft = FakeNft(table=False, root=tmp_path)
    report = heal.check(tmp_path, "change: nftables", nft)
    assert report["missing"] == ["nft table inet cni_bridge is missing"]
    assert report["restored"] == 100 and report["remaining"] == []
    batches = nft.batches()
    assert len(batches) == 2  # masquerade, then the port mappings (one option set)
    assert all(f"10.1.0.{i + 2} " in batches[0] for i in range(50))
    assert all(f"tcp . {8080 + i} comment" in batches[1] for i in range(50))


def test_a_deleted_table_is_restored_even_when_an_add_made_the_skeleton_again(
        tmp_path: Path) -> None:
    """After ``nft flush ruleset`` an ADD may recreate the skeleton before the check runs:
    the skeleton looks whole, the other attachments' entries are gone."""
    populate(tmp_path, 3)
    whole = FakeNft(table=True, root=tmp_path)
    assert heal.check(tmp_path, "change: nftables", whole)["restored"] == 0
    assert whole.batches() == []
    report = heal.check(tmp_path, "change: nftables", whole, force=["nftables"])
    assert report["missing"] == ["nftables: a table was deleted"]
    assert report["restored"] == 6 and len(whole.batches()) == 2
    assert heal.check(tmp_path, "x", whole, force=["iptables"])["restored"] == 0  # not ours


def test_a_table_deletion_notification_forces_the_next_restore(tmp_path: Path) -> None:
    import socket

    from cni_bridge.netlink import Subscription
    from cni_bridge.serve.server.health import Health
    from cni_bridge.serve.server.view import RecordsView, ServerView

    populate(tmp_path, 1)
    kernel, watcher = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with selectors.DefaultSelector() as sel, kernel, watcher:
        view = ServerView("s", "d", 1, RecordsView(tmp_path))
        health = Health(view, sel, Subscription(watcher), 30.0, lambda: None)
        health.due = None
        kernel.send(message(5, 1, "cni_bridge"))  # a chain
        health._notified(None)
        assert health.force == set() and health.due is not None
        kernel.send(message(2, 1, "cni_bridge") + message(2, 2, "nat"))  # tables
        health._notified(None)
        assert health.force == {"nftables"}  # no record uses iptables


def test_damaged_records_are_reported_not_fatal(tmp_path: Path) -> None:
    populate(tmp_path, 1)
    records.save_record(tmp_path, records.Record("n", "bad", "eth0", "bridge",
                                                 {"masq": [{"address": "nonsense"}]}))
    report = heal.check(tmp_path, "periodic", FakeNft(table=True, root=tmp_path))
    assert len(report["errors"]) == 1 and "n/bad.eth0.bridge" in report["errors"][0]


# --- scheduling (main process) -----------------------------------------------------------------


def test_checks_start_at_once_then_periodically_the_earliest_reason_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_bridge.serve.server.health import Health
    from cni_bridge.serve.server.view import RecordsView, ServerView

    view = ServerView("s", "d", 1, RecordsView(tmp_path))
    with selectors.DefaultSelector() as sel:
        health = Health(view, sel, None, 30.0, lambda: None)
        started: list[str] = []
        monkeypatch.setattr(health, "_start", lambda: (started.append(health.trigger),
                                                       setattr(health, "due", None)))
        now = time.monotonic()
        health.schedule("change: nftables", now + 5)  # later than the start check: ignored
        assert health.trigger == "start" and min(health.deadlines()) <= now
        assert health.on_time(now + 0.01) is False
        assert started == ["start"]
        health.schedule("change: iptables", now + 1)
        health.schedule("change: nftables", now + 0.5)  # earlier: replaces it
        assert health.on_time(now + 0.6) is False and started[-1] == "change: nftables"
        assert health.on_time(now + 31) is True and started[-1] == "periodic"
