"""Backends driven through a scripted command runner: which calls, in which order, and errors."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni_bridge.cni.errors import CniError, ConfigError, TryAgainError
from cni_bridge.firewall import names
from cni_bridge.firewall.commands import CommandResult, SubprocessRunner, check
from cni_bridge.firewall.detect import detect_backend, is_usable, make_backend, recorded_backend
from cni_bridge.firewall.iptables.backend import LOCALNET_DROP, LOCALNET_DROP_RULE, IptablesBackend
from cni_bridge.firewall.model import MasqEntry, Owner, PortmapOptions, PortMapping
from cni_bridge.firewall.nft.backend import NftablesBackend
from cni_bridge.firewall.noop import NoopBackend

A = Owner("mynet", "abc123", "eth0")
V4 = ipaddress.ip_interface("10.88.0.2/16")
EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"

Answer = Callable[[tuple[str, ...], str | None], CommandResult]


@dataclass
class Scripted:
    """Answers by the first matching (argv prefix -> reply) rule; records every call."""

    rules: list[tuple[tuple[str, ...], int, str, str]] = field(default_factory=list)
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def on(self, prefix: Sequence[str], rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.rules.append((tuple(prefix), rc, stdout, stderr))

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append((tuple(argv), input))
        for prefix, rc, out, err in self.rules:
            if tuple(argv[:len(prefix)]) == prefix:
                return CommandResult(tuple(argv), rc, out, err)
        return CommandResult(tuple(argv), 0)

    def argvs(self) -> list[tuple[str, ...]]:
        return [c[0] for c in self.calls]


def test_nft_add_is_one_batch_without_reads() -> None:
    runner = Scripted()
    NftablesBackend(runner).add_masquerade([MasqEntry.of(A, V4)])
    assert runner.argvs() == [("nft", "-f", "-")]
    batch = runner.calls[0][1] or ""
    assert "add element inet cni_bridge masq_owner4 { 10.88.0.2 comment" in batch


def test_nft_add_failure_reads_and_retries_exactly() -> None:
    runner = Scripted()
    runner.on(["nft", "-f", "-"], rc=1, stderr="File exists")
    runner.on(["nft", "-j", "list", "table"], stdout='{"nftables": []}')
    with pytest.raises(CniError, match="cannot add masquerade to nft table inet cni_bridge") as e:
        NftablesBackend(runner).add_masquerade([MasqEntry.of(A, V4)])
    assert "File exists" in e.value.details
    assert runner.argvs() == [("nft", "-f", "-"), ("nft", "-j", "list", "table", "inet",
                                                    "cni_bridge"), ("nft", "-f", "-")]


def test_nft_remove_without_our_table_is_quiet() -> None:
    runner = Scripted()
    runner.on(["nft", "-j", "list", "table"], rc=1, stderr="No such file or directory")
    runner.on(["nft", "-f", "-"], rc=1, stderr="No such file or directory")
    runner.on(["iptables"], rc=1, stderr="No chain/target/match by that name.")
    runner.on(["ip6tables"], rc=1, stderr="No chain/target/match by that name.")
    make_backend("nftables", runner).remove_masquerade(A, [V4])  # nothing to remove: no error
    assert runner.argvs()[-2:] == [
        ("nft", "-j", "list", "table", "inet", "cni_bridge"),
        ("iptables", "-w", "5", "-t", "nat", "-S", "CNI-70a29d9dc18bc4d652ea5d59")]


def test_iptables_port_mappings_of_many_owners_are_one_restore() -> None:
    """A restore after a reload: one read and one restore for every owner, each owner's chain
    declared, the shared jumps written once; a host port already DNATed by a chain of another
    owner is still refused."""
    owners = [Owner("mynet", f"c{i}", "eth0") for i in range(3)]
    entries = [PortMapping(o, "tcp", 8080 + i, ipaddress.ip_interface(f"10.88.0.{i + 2}/16"),
                           80, ipaddress.ip_address("198.51.100.1"))
               for i, o in enumerate(owners)]
    runner = Scripted()
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    IptablesBackend(runner).add_portmappings(entries, PortmapOptions())
    assert [c[0] for c in runner.argvs() if c[0] != "iptables"] == ["iptables-save",
                                                                     "iptables-restore"]
    script = runner.calls[-1][1] or ""
    for o in owners:
        assert f":{names.dnat_chain_name(o.network, o.container_id)} - [0:0]" in script
    assert script.count("-A PREROUTING ") == 1 and script.count("-A OUTPUT ") == 1
    taken = Scripted()
    taken.on(["iptables-save"], stdout=EMPTY_NAT.replace("COMMIT", "\n".join([
        ":CNI-DN-0123456789abcdef01234 - [0:0]",
        "-A CNI-DN-0123456789abcdef01234 -d 198.51.100.1/32 -p tcp -m tcp --dport 8081 "
        "-j DNAT --to-destination 10.88.0.9:80", "COMMIT"])))
    with pytest.raises(CniError, match="host port 198.51.100.1:8081/tcp is already published"):
        IptablesBackend(taken).add_portmappings(entries, PortmapOptions())


def test_iptables_localhost_mapping_installs_the_localnet_drop_once() -> None:
    """route_localnet would expose 127.0.0.1 mappings to the LAN: a raw PREROUTING drop for
    127.0.0.0/8 from outside lo goes in with the first localhost mapping, in the same restore,
    read in the same iptables-save; CHECK wants it."""
    local = [PortMapping(A, "tcp", 8080, V4, 80)]  # no hostIP: published on 127.0.0.1 too
    runner = Scripted()
    runner.on(["iptables-save"], stdout=EMPTY_NAT + "*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    IptablesBackend(runner).add_portmappings(local, PortmapOptions())
    assert [c[0] for c in runner.argvs()] == ["iptables-save", "iptables", "iptables", "iptables",
                                              "iptables-restore"]  # -N of the shared chains
    assert runner.argvs()[0] == ("iptables-save",)  # every table: nat and raw in one read
    restore = runner.calls[-1][1] or ""
    assert restore.endswith("COMMIT\n*raw\n-A PREROUTING " + LOCALNET_DROP_RULE + "\nCOMMIT\n")
    assert ('! -i lo -d 127.0.0.0/8 -m comment --comment "'
                                  + LOCALNET_DROP[8] + '" -j DROP') == LOCALNET_DROP_RULE
    assert any("raw PREROUTING" in m for m in IptablesBackend(runner).check_portmappings(
        local, PortmapOptions()))
    # As iptables-save prints it back: present, so neither added nor reported.
    saved = f"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d 127.0.0.0/8 ! -i lo -m comment " \
            f'--comment "{LOCALNET_DROP[8]}" -j DROP\nCOMMIT\n'
    present = Scripted()
    present.on(["iptables-save"], stdout=EMPTY_NAT + saved)
    IptablesBackend(present).add_portmappings(local, PortmapOptions())
    assert "*raw" not in (present.calls[-1][1] or "")
    assert not any("raw PREROUTING" in m for m in IptablesBackend(present).check_portmappings(
        local, PortmapOptions()))
    unexposed = Scripted()
    unexposed.on(["iptables-save"], stdout=EMPTY_NAT)
    IptablesBackend(unexposed).add_portmappings(local, PortmapOptions(snat=False))
    assert unexposed.argvs()[0] == ("iptables-save", "-t", "nat")
    assert "*raw" not in (unexposed.calls[-1][1] or "")


def test_a_recorded_iptables_removal_is_one_exact_restore_else_read_and_plan() -> None:
    """Our record names what our ADD wrote: DEL deletes it by its exact text, one restore and
    no read; when the kernel holds something else (here: the restore fails), it reads and plans
    as without a record."""
    mappings = [PortMapping(A, "tcp", 80, V4, 8080)]
    exact = Scripted()
    IptablesBackend(exact, recorded=True).remove_masquerade(A, [V4])
    IptablesBackend(exact, recorded=True).remove_portmappings(A, mappings)
    assert exact.argvs() == [("iptables-restore", "--noflush", "-w", "5")] * 2
    masq, portmap = (c[1] or "" for c in exact.calls)
    assert masq.splitlines()[1:] == [
        r'-D POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\""'
        " -j CNI-70a29d9dc18bc4d652ea5d59",
        "-F CNI-70a29d9dc18bc4d652ea5d59", "-X CNI-70a29d9dc18bc4d652ea5d59", "COMMIT"]
    assert portmap.splitlines()[1].startswith("-D CNI-HOSTPORT-DNAT -p tcp -m comment")
    assert portmap.splitlines()[2:4] == [f"-F {names.dnat_chain_name('mynet', 'abc123')}",
                                         f"-X {names.dnat_chain_name('mynet', 'abc123')}"]
    moved = Scripted()
    moved.on(["iptables-restore"], rc=1, stderr="iptables-restore: line 2 failed")
    moved.on(["iptables-save"], stdout=EMPTY_NAT)
    IptablesBackend(moved, recorded=True).remove_portmappings(A, mappings)
    assert [c[0] for c in moved.argvs()] == ["iptables-restore", "iptables-save"]  # IPv4 only


def test_a_recorded_iptables_removal_deletes_the_jump_with_its_conditions() -> None:
    """conditionsV4 are part of the jump's text: the exact removal deletes the very rule the
    ADD appended (else its restore fails and DEL reads and plans: a process more)."""
    mappings = [PortMapping(A, "tcp", 80, V4, 8080)]
    options = PortmapOptions(conditions_v4=("-s", "192.0.2.0/24"))
    added = Scripted()
    added.on(["iptables-save"], stdout=EMPTY_NAT)
    IptablesBackend(added).add_portmappings(mappings, options)
    jump = next(ln for ln in (added.calls[-1][1] or "").splitlines()
                if ln.startswith(f"-A {names.HOSTPORT_DNAT_CHAIN} "))
    assert "-s 192.0.2.0/24" in jump
    removed = Scripted()
    IptablesBackend(removed, recorded=True).remove_portmappings(A, mappings, options)
    assert removed.argvs() == [("iptables-restore", "--noflush", "-w", "5")]
    assert (removed.calls[0][1] or "").splitlines()[1] == "-D" + jump[2:]


def test_a_recorded_backend_removes_from_its_own_layout_only() -> None:
    """Our ADD's record proves where the owner's state is: DEL is one batch, no reads of the
    reference's tables or of the other backend."""
    nft = Scripted()
    backend = recorded_backend("nftables", nft)  # probed once, then remembered
    assert backend is not None
    nft.calls.clear()
    backend.remove_masquerade(A, [V4])
    backend.remove_portmappings(A, [PortMapping(A, "tcp", 80, V4, 8080)])
    assert nft.argvs() == [("nft", "-f", "-"), ("nft", "-f", "-")]
    ipt = Scripted()
    ipt.on(["iptables-save"], stdout=EMPTY_NAT)
    ipt.on(["ip6tables-save"], stdout=EMPTY_NAT)
    ipt_backend = recorded_backend("iptables", ipt)
    assert ipt_backend is not None
    ipt_backend.remove_masquerade(A, [V4])
    assert not any(argv[0] == "nft" for argv in ipt.argvs())


def test_a_record_naming_no_usable_backend_means_clean_everywhere() -> None:
    assert recorded_backend(None, Scripted()) is None
    assert recorded_backend("pf", Scripted()) is None
    broken = Scripted()
    broken.on(["nft"], rc=1)
    assert recorded_backend("nftables", broken) is None


def test_nft_remove_cleans_iptables_leftovers_of_an_earlier_backend() -> None:
    runner = Scripted()
    runner.on(["nft"], rc=1)
    runner.on(["iptables", "-w"], stdout="-N CNI-70a29d9dc18bc4d652ea5d59\n")
    runner.on(["ip6tables", "-w"], rc=1)
    runner.on(["iptables-save"], stdout=EMPTY_NAT.replace(
        "COMMIT", ":CNI-70a29d9dc18bc4d652ea5d59 - [0:0]\nCOMMIT"))
    runner.on(["ip6tables-save"], stdout=EMPTY_NAT)
    make_backend("nftables", runner).remove_masquerade(A, [V4])
    restores = [c for c in runner.calls if c[0][0] == "iptables-restore"]
    assert len(restores) == 1 and "-X CNI-70a29d9dc18bc4d652ea5d59" in (restores[0][1] or "")
    quiet = Scripted()
    quiet.on(["nft"], rc=1)
    NftablesBackend(quiet).remove_masquerade(A, [V4])  # no leftovers layout: nft alone
    assert {argv[0] for argv in quiet.argvs()} == {"nft"}


def test_iptables_remove_cleans_nft_leftovers_of_an_earlier_backend() -> None:
    runner = Scripted()
    runner.on(["nft", "-j"], rc=1, stderr="No such file or directory")
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    runner.on(["ip6tables-save"], stdout=EMPTY_NAT)
    make_backend("iptables", runner).remove_masquerade(A, [V4])
    assert runner.argvs()[-1] == ("nft", "-f", "-")
    assert "delete element inet cni_bridge" in (runner.calls[-1][1] or "")


def test_nft_rejects_iptables_only_options() -> None:
    backend = NftablesBackend(Scripted())
    pm = [PortMapping(A, "tcp", 80, V4, 80)]
    with pytest.raises(ConfigError, match="externalSetMarkChain"):
        backend.add_portmappings(pm, PortmapOptions(external_set_mark_chain="X"))
    with pytest.raises(ConfigError, match="conditionsV4"):
        backend.add_portmappings(pm, PortmapOptions(conditions_v4=("-s", "10.0.0.0/8")))


def test_iptables_add_reads_then_restores_once_with_a_bounded_lock_wait() -> None:
    runner = Scripted()
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    IptablesBackend(runner, lock_wait=3).add_masquerade([MasqEntry.of(A, V4)])
    assert runner.argvs() == [("iptables-save", "-t", "nat"),
                              ("iptables-restore", "--noflush", "-w", "3")]
    assert (runner.calls[1][1] or "").startswith("*nat\n:CNI-70a29d9dc18bc4d652ea5d59 - [0:0]\n")


def test_iptables_lock_timeout_is_try_again() -> None:
    runner = Scripted()
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    runner.on(["iptables-restore"], rc=4, stderr="Another app is currently holding the xtables "
                                                 "lock. Stopped waiting after 5s.")
    with pytest.raises(TryAgainError) as e:
        IptablesBackend(runner).add_masquerade([MasqEntry.of(A, V4)])
    assert e.value.code == 11 and "xtables lock" in e.value.msg
    assert len([c for c in runner.argvs() if c[0] == "iptables-restore"]) == 1


def test_iptables_retries_once_when_the_table_moved() -> None:
    runner = Scripted()
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    runner.on(["iptables-restore"], rc=1, stderr="line 3 failed")
    with pytest.raises(CniError, match="cannot add IPv4 masquerade rules"):
        IptablesBackend(runner).add_masquerade([MasqEntry.of(A, V4)])
    assert [c[0] for c in runner.argvs()] == ["iptables-save", "iptables-restore"] * 2


def test_iptables_remove_skips_an_unusable_family_but_not_both() -> None:
    runner = Scripted()
    runner.on(["ip6tables-save"], rc=3, stderr="can't initialize ip6tables table `nat'")
    runner.on(["iptables-save"], stdout=EMPTY_NAT)
    runner.on(["nft"], rc=1)
    IptablesBackend(runner).remove_masquerade(A, None)  # v4 read fine, nothing to delete
    assert not any(c[0].endswith("-restore") for c in runner.argvs())
    broken = Scripted()
    broken.on(["iptables-save"], rc=127)
    broken.on(["ip6tables-save"], rc=127)
    with pytest.raises(CniError, match="neither iptables-save nor ip6tables-save works"):
        IptablesBackend(broken).remove_masquerade(A, None)


def test_detection_prefers_nftables_and_honours_a_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Scripted()
    assert detect_backend(runner).name == "nftables"
    assert runner.argvs() == [("nft", "-c", "-f", "-")]
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "fresh"))  # forget that success
    no_nft = Scripted()
    no_nft.on(["nft"], rc=127)
    assert detect_backend(no_nft).name == "iptables"
    with pytest.raises(CniError, match="nftables was requested but is not usable"):
        detect_backend(no_nft, "nftables")
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "fresher"))
    nothing = Scripted()
    nothing.on([], rc=127)
    with pytest.raises(CniError, match="no usable firewall backend"):
        detect_backend(nothing)
    with pytest.raises(ConfigError, match="unknown firewall backend 'pf'"):
        make_backend("pf", runner)
    assert isinstance(make_backend("none", runner), NoopBackend)


def test_a_usable_backend_is_probed_once_and_a_failure_never_remembered() -> None:
    broken = Scripted()
    broken.on(["nft"], rc=1)
    assert not is_usable(NftablesBackend(broken))
    assert not is_usable(NftablesBackend(broken))
    assert len(broken.argvs()) == 2  # probed each time while it fails
    working = Scripted()
    assert is_usable(NftablesBackend(working)) and is_usable(NftablesBackend(working))
    assert detect_backend(working).name == "nftables"
    assert working.argvs() == [("nft", "-c", "-f", "-")]  # one probe, then remembered
    assert is_usable(NoopBackend())


def test_noop_backend_does_nothing() -> None:
    backend = NoopBackend()
    backend.add_masquerade([MasqEntry.of(A, V4)])
    assert backend.check_portmappings([PortMapping(A, "tcp", 1, V4, 1)], PortmapOptions()) == []
    assert backend.gc_masquerade("mynet", []) == []


def test_subprocess_runner_reports_a_missing_tool() -> None:
    result = SubprocessRunner()(["/nonexistent/tool"])
    assert result.returncode == 127 and not result.ok
    with pytest.raises(CniError, match="reading x") as e:
        check(result, "reading x")
    assert "/nonexistent/tool" in e.value.details
    assert SubprocessRunner()(["cat"], input="hi").stdout == "hi"


def test_backends_made_without_leftovers_touch_only_their_own_layout() -> None:
    """Where every backend runs (DEL without a record), none sweeps the others' layout: the
    nftables removal then ran twice, with two iptables-save and an iptables -S besides."""
    nft = Scripted()
    nft.on(["nft"], rc=1)
    make_backend("nftables", nft, leftovers=False).remove_masquerade(A, [V4])
    assert {argv[0] for argv in nft.argvs()} == {"nft"}
    ipt = Scripted()
    ipt.on(["iptables-save"], stdout=EMPTY_NAT)
    ipt.on(["ip6tables-save"], stdout=EMPTY_NAT)
    make_backend("iptables", ipt, leftovers=False).remove_masquerade(A, [V4])
    assert "nft" not in {argv[0] for argv in ipt.argvs()}
