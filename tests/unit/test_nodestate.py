"""Who owns a namespace's state directory (no root): owner files, the proofs of death, claiming
the caller's directory (also by racing processes), survey and sweep of the others."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.node import owner as nodeowner
from cni_bridge.node import records
from cni_bridge.node import state as nodestate
from cni_bridge.node.state import DEAD, OWN, UNPROVEN, Owner, judge_other_inode, judge_own_inode

BOOT = "6f1c2d3e-0000-4000-8000-000000000001"
RACERS = 16


def test_owner_text_parses_back() -> None:
    assert nodestate.parse_owner(nodeowner.owner_text(4096, BOOT)) == Owner(4096, BOOT)
    assert nodestate.parse_owner(nodeowner.owner_text(None, BOOT)) == Owner(None, BOOT)


@pytest.mark.parametrize("text", [None, "", "netns-cookie 12\n", "boot-id x\n",
                                  "netns-cookie -1\nboot-id x\n", "netns-cookie 1e3\nboot-id x\n",
                                  "netns-cookie 5\nboot-id \n", "garbage"])
def test_a_missing_or_damaged_owner_is_none(text: str | None) -> None:
    assert nodestate.parse_owner(text) is None


def test_the_callers_own_inode() -> None:
    me = Owner(7, BOOT)
    assert judge_own_inode(Owner(7, BOOT), me) == OWN
    assert judge_own_inode(Owner(8, BOOT), me) == DEAD  # two live namespaces never share it
    assert judge_own_inode(Owner(7, "earlier"), me) == DEAD  # cookies restart at boot
    assert judge_own_inode(None, me) == UNPROVEN  # written before owner files
    assert judge_own_inode(Owner(None, BOOT), me) == UNPROVEN
    assert judge_own_inode(Owner(None, BOOT), Owner(None, BOOT)) == OWN  # no cookie: adopted
    assert judge_own_inode(Owner(None, "earlier"), Owner(None, BOOT)) == DEAD


def test_another_inode_needs_the_live_holders_cookie() -> None:
    assert judge_other_inode(Owner(7, BOOT), BOOT, 9, live=True) == DEAD
    assert judge_other_inode(Owner(7, BOOT), BOOT, 7, live=True) == OWN
    assert judge_other_inode(Owner(7, BOOT), BOOT, None, live=False) == UNPROVEN
    assert judge_other_inode(Owner(7, BOOT), BOOT, None, live=True) == UNPROVEN
    assert judge_other_inode(Owner(7, "earlier"), BOOT, None, live=False) == DEAD
    assert judge_other_inode(None, BOOT, 9, live=True) == UNPROVEN


# --- claiming, on a private state root ---------------------------------------------------------


@pytest.fixture(autouse=True)
def _forget_proof() -> None:
    records._proven = None  # each test has its own state root, but keep tests independent


def write_dir(path: Path, owner: str | None, files: dict[str, str]) -> None:
    path.mkdir(parents=True)
    if owner is not None:
        (path / records.OWNER_FILE).write_text(owner)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)


def test_a_missing_directory_is_made_with_our_owner(private_state_dir: Path) -> None:
    root = Path(records.state_root())
    assert root.parent == private_state_dir
    assert (root / records.OWNER_FILE).read_text() == nodeowner.current_owner()
    assert records.proven_root() == str(root)
    assert sorted(p.name for p in private_state_dir.iterdir()) == [root.name]


def test_a_dead_namespaces_directory_is_replaced(private_state_dir: Path) -> None:
    root = Path(records.namespace_dir())
    write_dir(root, nodeowner.owner_text(1, "an-earlier-boot"),
              {"net/dead.eth0.portmap.json": "{}", "usable-nftables": ""})
    assert records.proven_root() is None  # read-only: nothing changes
    assert (root / "net").is_dir()
    assert records.probe_marker("nftables") is None  # neither read nor written there
    assert records.state_root() == str(root)
    assert sorted(p.name for p in root.iterdir()) == [records.OWNER_FILE]
    assert sorted(p.name for p in private_state_dir.iterdir()) == [root.name]  # aside: gone
    assert records.probe_marker("nftables") == str(root / "usable-nftables")


def test_a_directory_without_owner_is_adopted(private_state_dir: Path) -> None:
    root = Path(records.namespace_dir())
    write_dir(root, None, {"net/live.eth0.bridge.json": "{}"})
    assert records.proven_root() is None
    records.state_root()
    assert (root / "net" / "live.eth0.bridge.json").exists()
    assert (root / records.OWNER_FILE).read_text() == nodeowner.current_owner()


def _claim_and_record(base: str, index: int, start: Any) -> None:
    os.environ[records.STATE_ENV] = base
    records._proven = None
    move_aside = nodestate._move_aside

    def slow_move_aside(base: str, name: str) -> str:
        time.sleep(0.05)  # widen the window between judging the owner and moving the directory
        return move_aside(base, name)

    nodestate._move_aside = slow_move_aside  # type: ignore[assignment]
    start.wait()
    root = records.state_root()
    records.save_record(root, records.Record("net", f"c{index}", "eth0", "bridge", {}))


def test_racing_claims_lose_no_fresh_record(private_state_dir: Path) -> None:
    root = Path(records.namespace_dir())
    write_dir(root, nodeowner.owner_text(1, "an-earlier-boot"), {"net/dead.eth0.bridge.json": "{}"})
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(RACERS)
    procs = [ctx.Process(target=_claim_and_record, args=(str(private_state_dir), i, start))
             for i in range(RACERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(p.name for p in (root / "net").iterdir()) == sorted(
        f"c{i}.eth0.bridge.json" for i in range(RACERS))
    assert sorted(p.name for p in private_state_dir.iterdir()) == [root.name]


def test_survey_and_sweep(private_state_dir: Path) -> None:
    mine = Path(records.state_root())
    earlier = private_state_dir / "netns-1"
    unseen = private_state_dir / "netns-2"
    legacy = private_state_dir / "netns-3"
    boot = nodeowner.read_small(nodeowner.BOOT_ID_FILE) or ""
    write_dir(earlier, nodeowner.owner_text(5, "an-earlier-boot"), {"n/x.eth0.bridge.json": "{}"})
    write_dir(unseen, nodeowner.owner_text(5, boot.strip()), {})
    write_dir(legacy, None, {})
    leftover = private_state_dir / f"{nodestate.STALE_PREFIX}netns-9-abcd"
    write_dir(leftover, None, {"n/y.json": "{}"})
    report = nodestate.survey(str(private_state_dir))
    assert [f.path for f in report.dead] == [str(earlier)]
    assert [f.path for f in report.unproven] == [str(unseen), str(legacy)]
    assert report.leftovers == [str(leftover)]
    assert mine.is_dir() and earlier.is_dir()  # a survey changes nothing

    report = nodestate.sweep(str(private_state_dir))
    assert report.removed == [str(earlier)]
    assert sorted(p.name for p in private_state_dir.iterdir()) == sorted(
        [mine.name, unseen.name, legacy.name])


def test_a_survey_scans_proc_at_most_once(private_state_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the scan finds no namespace with any of the directories' inodes."""
    boot = (nodeowner.read_small(nodeowner.BOOT_ID_FILE) or "").strip()
    for inode in (1, 2, 3):
        write_dir(private_state_dir / f"netns-{inode}", nodeowner.owner_text(5, boot), {})
    scans: list[int] = []
    monkeypatch.setattr(nodestate, "live_namespaces", lambda: scans.append(1) or {})
    report = nodestate.survey(str(private_state_dir))
    assert len(report.unproven) == 3 and scans == [1]


def test_sweep_spares_a_directory_claimed_since_the_survey(private_state_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    earlier = private_state_dir / "netns-1"
    write_dir(earlier, nodeowner.owner_text(5, "an-earlier-boot"), {})
    real_survey = nodestate.survey

    def survey_then_claim(base: str) -> nodestate.Survey:
        report = real_survey(base)
        (earlier / records.OWNER_FILE).write_text(nodeowner.current_owner())
        return report

    monkeypatch.setattr(nodestate, "survey", survey_then_claim)
    assert nodestate.sweep(str(private_state_dir)).removed == []
    assert earlier.is_dir()


def test_nsfs_mount_points_are_unescaped() -> None:
    assert nodestate._unescape(r"/run/netns/a\040b") == "/run/netns/a b"


def test_status_names_the_stale_state_and_what_it_leaves() -> None:
    from cni_bridge.admin.report import format_node_state

    assert format_node_state(nodestate.Survey()) == ""
    dead = nodestate.Found("/run/cni-bridge/netns-7", "netns cookie 9, boot b", "why")
    text = format_node_state(nodestate.Survey(dead=[dead, dead], unproven=[dead]))
    assert "stale state of 2 dead namespaces ('cni-bridge gc' removes it):" in text
    assert "  /run/cni-bridge/netns-7: why (netns cookie 9, boot b)" in text
    assert "state of 1 namespace not provably dead, left alone:" in text


class _NoCookieSocket:
    """A kernel before 5.14: SO_NETNS_COOKIE is unknown (ENOPROTOOPT)."""

    def __init__(self, *args: object) -> None: ...

    def getsockopt(self, *args: object) -> bytes:
        raise OSError(92, "Protocol not available")

    def close(self) -> None: ...


def test_without_the_cookie_only_a_reboot_is_told_apart(
        private_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import _socket

    monkeypatch.setattr(_socket, "socket", _NoCookieSocket)
    assert nodeowner.netns_cookie() is None
    assert nodeowner.current_owner().startswith("netns-cookie unavailable\nboot-id ")
    root = Path(records.state_root())
    assert (root / records.OWNER_FILE).read_text() == nodeowner.current_owner()
    (root / "net").mkdir()
    records._proven = None
    records.state_root()  # the same boot, no cookie: taken as its own, records kept
    assert (root / "net").is_dir()


def test_an_unwritable_state_root_remembers_no_probe(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(records.STATE_ENV, str(blocker / "state"))
    assert records.probe_marker("nftables") is None
