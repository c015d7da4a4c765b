"""Spoof check and network isolation planners (no root): the rules written, what CHECK reports,
the config fields that turn them on."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from cni_bridge.cni.errors import ConfigError
from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.nft import isolation, spoofcheck
from tests.unit.test_bridge_config import parse

MAC = "0a:58:0a:4d:00:02"
IPAM = {"ipam": {"type": "host-local", "subnet": "10.77.0.0/24"}}


@dataclass
class Recorder:
    """Answers every command with `out` (exit `rc`) and records it."""

    out: str = ""
    rc: int = 0
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append((tuple(argv), input))
        return CommandResult(tuple(argv), self.rc, self.out, "")


def pin() -> spoofcheck.Pin:
    return spoofcheck.make_pin(MAC, [ipaddress.ip_address("10.77.0.2"),
                                     ipaddress.ip_address("fd00:77::2")])


def test_link_local_is_the_kernels_eui64() -> None:
    assert str(spoofcheck.link_local_of(MAC)) == "fe80::858:aff:fe4d:2"
    assert str(spoofcheck.link_local_of("02:00:00:00:00:01")) == "fe80::ff:fe00:1"


def test_pin_splits_families_and_adds_link_locals() -> None:
    extra = ipaddress.IPv6Address("fe80::1234")
    p = spoofcheck.make_pin(MAC.upper(), [ipaddress.ip_address("10.77.0.2")], [extra])
    assert p.mac == MAC and [str(a) for a in p.ipv4] == ["10.77.0.2"]
    assert [str(a) for a in p.ipv6] == ["fe80::858:aff:fe4d:2", "fe80::1234"]


def test_mac_only_plan_is_the_reference_layout() -> None:
    text = spoofcheck.plan_add("c1", "eth0", "veth1234", MAC)
    assert "ipspoofchk" not in text
    assert 'add rule bridge nat PREROUTING iifname "veth1234" jump cni-br-iface-c1-eth0 ' \
           'comment "macspoofchk-c1-eth0"' in text


def test_address_rules_follow_the_mac_jump() -> None:
    lines = spoofcheck.plan_add("c1", "eth0", "veth1234", MAC, pin()).splitlines()
    chain_rules = [ln for ln in lines if ln.startswith("add rule bridge nat cni-br-iface-c1-eth0 ")]
    assert "jump cni-br-iface-c1-eth0-mac" in chain_rules[0]
    labels = [ln.rsplit(": ", 1)[1].rstrip('"') for ln in chain_rules[1:]]
    assert labels == list(spoofcheck.IP_LABELS)
    text = "\n".join(chain_rules)
    assert "ip saddr != { 10.77.0.2 } drop" in text
    assert "arp saddr ip != { 10.77.0.2, 0.0.0.0 } drop" in text
    assert f"arp saddr ether != {MAC} drop" in text
    assert "ip6 saddr != { fd00:77::2, fe80::858:aff:fe4d:2 } drop" in text
    assert "@th,64,128 != { 0xfd000077000000000000000000000002, " \
           "0xfe8000000000000008580afffe4d0002 } drop" in text
    assert "@th,192,16 0x0201 @th,208,48 != 0x0a580a4d0002 drop" in text


def test_no_ipv4_address_means_no_ipv4_at_all() -> None:
    rules = dict(spoofcheck.plan_ip_rules(
        spoofcheck.make_pin(MAC, [ipaddress.ip_address("fd00::5")])))
    assert rules[spoofcheck.SOURCE4] == "ether type ip drop"
    assert rules[spoofcheck.ARP_IP] == "arp saddr ip != { 0.0.0.0 } drop"


@dataclass
class Tables:
    """Answers nft scripts from a fake ruleset: ``list chain`` with that chain's rules,
    ``get element`` by set membership, ``list table`` with everything."""

    rules: list[tuple[str, str]] = field(default_factory=list)  # (chain, comment)
    sets: dict[str, list[Any]] = field(default_factory=dict)
    exists: bool = True
    scripts: list[str] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        words = [a for a in argv[1:] if not a.startswith("-")]  # nft -j list chain ...
        script = (input if input is not None else " ".join(words)).strip()
        self.scripts.append(script)
        if not self.exists:
            return CommandResult(tuple(argv), 1, "", "No such file or directory")
        if script.startswith("list chain"):
            chain = script.split()[-1]
            rules = [r for r in self.rules if r[0] == chain]
            if not rules and chain not in {c for c, _ in self.rules}:
                return CommandResult(tuple(argv), 1, "", "No such file or directory")
            return CommandResult(tuple(argv), 0, self._json(rules), "")
        if script.startswith("get element"):
            for line in script.splitlines():
                name, wanted = line.split()[4], line.split("{")[1].split("}")[0].strip()
                members = [" . ".join(f'"{x}"' for x in m["concat"]) if isinstance(m, dict)
                           else f'"{m}"' for m in self.sets.get(name, [])]
                if wanted not in members:
                    return CommandResult(tuple(argv), 1, "", "No such file or directory")
            return CommandResult(tuple(argv), 0, "", "")
        return CommandResult(tuple(argv), 0, self._json(self.rules, self.sets), "")

    @staticmethod
    def _json(rules: list[tuple[str, str]], sets: dict[str, list[Any]] | None = None) -> str:
        items: list[dict[str, Any]] = [{"metainfo": {}}]
        items += [{"set": {"name": n, "elem": e}} for n, e in (sets or {}).items()]
        items += [{"rule": {"family": "bridge", "table": "nat", "chain": chain,
                            "comment": comment, "handle": n}}
                  for n, (chain, comment) in enumerate(rules)]
        return json.dumps({"nftables": items})


def complete(cid: str = "c1") -> list[tuple[str, str]]:
    chain, comment = f"cni-br-iface-{cid}-eth0", f"macspoofchk-{cid}-eth0"
    return [("PREROUTING", comment), (chain, comment), (f"{chain}-mac", comment),
            (f"{chain}-mac", comment),
            *((chain, spoofcheck.ip_comment(cid, "eth0", lb)) for lb in spoofcheck.IP_LABELS)]


def test_check_finds_nothing_missing() -> None:
    ruleset = Tables(complete() + complete("c2"))
    assert spoofcheck.check_spoofcheck(ruleset, "c1", "eth0", True) == []
    # Keyed: the base chain and this container's two chains, never the whole table.
    assert ruleset.scripts == ["list chain bridge nat PREROUTING",
                               "list chain bridge nat cni-br-iface-c1-eth0",
                               "list chain bridge nat cni-br-iface-c1-eth0-mac"]


def test_check_names_each_missing_rule() -> None:
    rules = [r for r in complete() if not r[1].endswith(spoofcheck.ARP_IP)]
    missing = spoofcheck.check_spoofcheck(Tables(rules[1:] + [("PREROUTING", "other")]),
                                          "c1", "eth0", True)
    assert missing == ['rule "macspoofchk-c1-eth0" in chain PREROUTING',
                       'rule "ipspoofchk-c1-eth0: arp sender ip" in chain cni-br-iface-c1-eth0']
    # The MAC check alone does not ask for the address rules.
    assert spoofcheck.check_spoofcheck(Tables(rules), "c1", "eth0", False) == []
    no_table = spoofcheck.check_spoofcheck(Tables(exists=False), "c1", "eth0", False)
    assert no_table == ["nftables chain bridge nat PREROUTING does not exist"]


def test_remove_reads_the_base_chain_only_and_tolerates_missing_chains() -> None:
    ruleset = Tables(complete() + complete("c2"))
    spoofcheck.remove_spoofcheck(ruleset, "c1", "eth0")
    read, batch = ruleset.scripts
    assert read == "list chain bridge nat PREROUTING"
    assert batch.splitlines()[0] == "delete rule bridge nat PREROUTING handle 0"
    assert "cni-br-iface-c2" not in batch
    assert batch.splitlines()[1:4] == ["add chain bridge nat cni-br-iface-c1-eth0",
                                       "flush chain bridge nat cni-br-iface-c1-eth0",
                                       "delete chain bridge nat cni-br-iface-c1-eth0"]
    nothing = Tables(exists=False)
    spoofcheck.remove_spoofcheck(nothing, "c1", "eth0")
    assert nothing.scripts == ["list chain bridge nat PREROUTING"]


def test_remove_commits_nothing_when_nothing_of_the_attachment_is_there() -> None:
    """A repeated DEL: no jump, no chains, no transaction. Chains left without their jump (a
    flush from outside) are still removed."""
    gone = Tables(complete("c2"))
    spoofcheck.remove_spoofcheck(gone, "c1", "eth0")
    assert gone.scripts == ["list chain bridge nat PREROUTING",
                            "list chain bridge nat cni-br-iface-c1-eth0",
                            "list chain bridge nat cni-br-iface-c1-eth0-mac"]
    orphans = Tables([("PREROUTING", "other"),
                      *(r for r in complete() if r[0] != "PREROUTING")])
    spoofcheck.remove_spoofcheck(orphans, "c1", "eth0")
    assert orphans.scripts[-1].splitlines()[0] == "add chain bridge nat cni-br-iface-c1-eth0"
    assert orphans.scripts[-1].splitlines()[-1] == \
        "delete chain bridge nat cni-br-iface-c1-eth0-mac"


def test_isolation_plan_is_idempotent_and_one_element_per_bridge() -> None:
    lines = isolation.plan_isolate(["br1", "br1.5", "br1"])
    assert lines.count('add element inet cni_bridge isolated_bridges { "br1" }') == 1
    assert 'add element inet cni_bridge isolated_bridge_self { "br1.5" . "br1.5" }' in lines
    assert not any(ln.startswith(("create ", "delete ")) for ln in lines)
    assert "flush chain inet cni_bridge isolation_forward" in lines
    rule = [ln for ln in lines if ln.startswith("add rule")]
    assert rule == ["add rule inet cni_bridge isolation_forward iifname @isolated_bridges "
                    "oifname @isolated_bridges iifname . oifname != @isolated_bridge_self drop "
                    'comment "cni-bridge: between isolated networks"']


def test_isolation_refuses_names_nft_cannot_quote() -> None:
    with pytest.raises(ConfigError, match="quote"):
        isolation.plan_isolate(['br"x'])


def isolation_tables(selves: list[Any], rule: bool = True) -> Tables:
    rules = [("isolation_forward", isolation.DROP_COMMENT)] if rule else []
    return Tables(rules, {"isolated_bridges": [s["concat"][0] for s in selves],
                          "isolated_bridge_self": selves})


def test_isolation_check() -> None:
    ok = isolation_tables([{"concat": ["br1", "br1"]}])
    assert isolation.check_isolated(ok, ["br1"]) == []
    assert [s.split("{")[0] for s in ok.scripts] == [  # by key: no whole-table read
        "list chain inet cni_bridge isolation_forward",
        "get element inet cni_bridge isolated_bridges ",
        "get element inet cni_bridge isolated_bridge_self "]
    assert isolation.check_isolated(ok, ["br2"]) == [
        '"br2" is not in set isolated_bridges', '"br2" . "br2" is not in set isolated_bridge_self']
    no_rule = isolation.check_isolated(isolation_tables([], rule=False), [])
    assert no_rule == ["the isolation rule in chain inet cni_bridge isolation_forward is missing"]
    # Something missing: still by key (which one, one at a time), never the whole table.
    vlan = isolation_tables([{"concat": ["br1", "br1"]}, {"concat": ["br1.5", "br1.5"]}])
    vlan.sets["isolated_bridge_self"] = [{"concat": ["br1", "br1"]}]
    assert isolation.check_isolated(vlan, ["br1", "br1.5"]) == [
        '"br1.5" . "br1.5" is not in set isolated_bridge_self']
    assert not any(s.startswith("list table") for s in vlan.scripts)


def test_config_fields() -> None:
    cfg = parse({"ipspoofchk": True, **IPAM})
    assert cfg.ipspoofchk and cfg.macspoofchk  # pinning addresses pins the MAC too
    assert not parse(IPAM).ipspoofchk and not parse(IPAM).isolate_networks
    assert parse({"isolateNetworks": True}).isolate_networks
    with pytest.raises(ConfigError, match="needs IPAM"):
        parse({"ipspoofchk": True})
    with pytest.raises(ConfigError, match="trunk"):
        parse({"ipspoofchk": True, "vlanTrunk": [{"id": 5}], **IPAM})
    with pytest.raises(ConfigError):
        parse({"isolateNetworks": "yes"})
