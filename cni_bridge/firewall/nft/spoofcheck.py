"""Anti-spoofing on a container's host veth, in the reference plugin's nftables layout
(REFERENCE.md §2.4: table ``bridge nat``, a jump per container in ``PREROUTING``).

``macspoofchk`` pins the source MAC; ``ipspoofchk`` (ours) also pins the addresses (IP, ARP,
neighbour discovery). Its rules sit in the per-container chain after the jump to the MAC chain,
so the reference's teardown removes them too. Allowed without an address: DHCP from 0.0.0.0, ARP
probes, DAD / MLD from ``::``; IPv6 sources include the MAC's EUI-64 link-local.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cni_bridge.firewall.commands import CommandRunner, check
from cni_bridge.firewall.model import Pin as Pin  # the bridge plugin makes its pins here
from cni_bridge.firewall.model import SpoofEntry
from cni_bridge.firewall.nft.client import Nft

TABLE = "nat"  # bridge family table; name shared with the reference: must never change
BASE_CHAIN = "PREROUTING"
IP_COMMENT_PREFIX = "ipspoofchk"  # ours; must never change (CHECK finds the rules by it)

# Labels of the address rules, part of their comment ("ipspoofchk-<cid>-<ifname>: <label>").
DHCP = "dhcp client"
UNSPECIFIED6 = "dad and mld from ::"
SOURCE4 = "ipv4 source"
ARP_MAC = "arp sender mac"
ARP_IP = "arp sender ip"
SOURCE6 = "ipv6 source"
ND_TARGET = "nd target"
ND_SLLA = "ns source link-layer address"
ND_TLLA = "na target link-layer address"
ROUTER = "router advertisement and redirect"
ETHERTYPE = "other ethertypes"
IP_LABELS = (DHCP, UNSPECIFIED6, SOURCE4, ARP_MAC, ARP_IP, SOURCE6, ND_TARGET, ND_SLLA, ND_TLLA,
             ROUTER, ETHERTYPE)


def link_local_of(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address the kernel derives from `mac` (addr_gen_mode 0)."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def make_pin(mac: str, addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
             link_locals: Sequence[ipaddress.IPv6Address] = ()) -> Pin:
    v4 = [a for a in addresses if isinstance(a, ipaddress.IPv4Address)]
    v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Address)]
    v6 += [link_local_of(mac), *link_locals]
    return Pin(mac.lower(), tuple(dict.fromkeys(v4)), tuple(dict.fromkeys(v6)))


def _chain(container_id: str, ifname: str) -> str:
    return f"cni-br-iface-{container_id}-{ifname}"


def _comment(container_id: str, ifname: str) -> str:
    return f"macspoofchk-{container_id}-{ifname}"


def ip_comment(container_id: str, ifname: str, label: str) -> str:
    return f"{IP_COMMENT_PREFIX}-{container_id}-{ifname}: {label}"


def _set(items: Sequence[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def _hex(value: int, bits: int) -> str:
    return f"0x{value:0{bits // 4}x}"


def plan_ip_rules(pin: Pin) -> list[tuple[str, str]]:
    """(label, rule) pairs pinning `pin`; evaluated after the MAC chain accepted the frame."""
    mac = int(pin.mac.replace(":", ""), 16)
    v6 = [int(a) for a in pin.ipv6]
    # Neighbour discovery: the target (bits 64..191 of ICMPv6) and the first option, when it
    # is a link-layer address one (type 1 in NS, 2 in NA; length 1): bits 192..255.
    return [
        (DHCP, "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return"),
        (UNSPECIFIED6, "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, "
                       "mld2-listener-report } return"),
        (SOURCE4, f"ip saddr != {_set(pin.ipv4)} drop" if pin.ipv4 else "ether type ip drop"),
        (ARP_MAC, f"arp saddr ether != {pin.mac} drop"),
        (ARP_IP, f"arp saddr ip != {_set([*pin.ipv4, '0.0.0.0'])} drop"),
        (SOURCE6, f"ip6 saddr != {_set(pin.ipv6)} drop"),
        (ND_TARGET, f"icmpv6 type nd-neighbor-advert @th,64,128 != "
                    f"{_set([_hex(a, 128) for a in v6])} drop"),
        (ND_SLLA, f"icmpv6 type nd-neighbor-solicit @th,192,16 0x0101 @th,208,48 != "
                  f"{_hex(mac, 48)} drop"),
        (ND_TLLA, f"icmpv6 type nd-neighbor-advert @th,192,16 0x0201 @th,208,48 != "
                  f"{_hex(mac, 48)} drop"),
        (ROUTER, "icmpv6 type { nd-router-advert, nd-redirect } drop"),
        (ETHERTYPE, "ether type != { ip, arp, ip6 } drop"),
    ]


def plan_add(container_id: str, ifname: str, host_veth: str, mac: str,
             pin: Pin | None = None) -> str:
    chain, comment = _chain(container_id, ifname), _comment(container_id, ifname)
    address_rules = [
        f'add rule bridge {TABLE} {chain} {rule} comment "{ip_comment(container_id, ifname, lb)}"'
        for lb, rule in (plan_ip_rules(pin) if pin is not None else [])
    ]
    return "\n".join([
        f"add table bridge {TABLE}",
        f"add chain bridge {TABLE} {BASE_CHAIN} {{ type filter hook prerouting priority -300; "
        "policy accept; }",
        f"add chain bridge {TABLE} {chain}",
        f"add chain bridge {TABLE} {chain}-mac",
        f"flush chain bridge {TABLE} {chain}",
        f"flush chain bridge {TABLE} {chain}-mac",
        f'add rule bridge {TABLE} {chain} jump {chain}-mac comment "{comment}"',
        *address_rules,
        f'add rule bridge {TABLE} {chain}-mac ether saddr {mac} return comment "{comment}"',
        f'add rule bridge {TABLE} {chain}-mac drop comment "{comment}"',
        f'add rule bridge {TABLE} {BASE_CHAIN} iifname "{host_veth}" jump {chain} '
        f'comment "{comment}"',
    ]) + "\n"


def add_spoofcheck(runner: CommandRunner, container_id: str, ifname: str, host_veth: str,
                   mac: str, pin: Pin | None = None) -> None:
    script = plan_add(container_id, ifname, host_veth, mac, pin)
    what = "MAC and address" if pin is not None else "MAC"
    check(Nft(runner).run(script), f"cannot install {what} spoof check for {ifname}")


def check_spoofcheck(runner: CommandRunner, container_id: str, ifname: str,
                     addresses: bool) -> list[str]:
    """What is missing (the address rules too when `addresses`), by chain and comment."""
    chain, comment = _chain(container_id, ifname), _comment(container_id, ifname)
    nft = Nft(runner)
    base = nft.chain_rules("bridge", TABLE, BASE_CHAIN)
    if base is None:
        return [f"nftables chain bridge {TABLE} {BASE_CHAIN} does not exist"]
    own = nft.chain_rules("bridge", TABLE, chain) or ()
    mac = nft.chain_rules("bridge", TABLE, f"{chain}-mac") or ()
    present = {(r.chain, r.comment) for r in [*base, *own]}
    expected = [(BASE_CHAIN, comment), (chain, comment)]
    if addresses:
        expected += [(chain, ip_comment(container_id, ifname, lb)) for lb in IP_LABELS]
    missing = [f'rule "{c}" in chain {ch}' for ch, c in expected if (ch, c) not in present]
    if len(mac) != 2:
        missing.append(f"chain {chain}-mac has {len(mac)} rules, not 2")
    return missing


def _jumpless(nft: Nft, entries: Sequence[SpoofEntry]) -> list[SpoofEntry]:
    present = {r.comment for r in nft.chain_rules("bridge", TABLE, BASE_CHAIN) or ()}
    return [e for e in entries if _comment(e.owner.container_id, e.owner.ifname) not in present]


def missing_jumps(nft: Nft, entries: Sequence[SpoofEntry]) -> list[str]:
    gone = _jumpless(nft, entries)
    return [f"nft chain bridge {TABLE} {BASE_CHAIN} lacks the spoof check of {len(gone)} "
            "attachment(s)"] if gone else []


def restore_jumpless(runner: CommandRunner, entries: Sequence[SpoofEntry]) -> None:
    """One transaction; an entry whose jump is there is left alone (no second jump)."""
    nft = Nft(runner)
    script = "".join(plan_add(e.owner.container_id, e.owner.ifname, e.host_veth, e.mac, e.pin)
                     for e in _jumpless(nft, entries))
    if script:
        check(nft.run(script), f"cannot restore the spoof check of {len(entries)} attachment(s)")


def remove_spoofcheck(runner: CommandRunner, container_id: str, ifname: str) -> None:
    """Remove the jump and both chains; what is gone is fine (a chain is created and deleted in
    the same transaction). With nothing there, no transaction: each wakes the server's watcher."""
    chain, comment = _chain(container_id, ifname), _comment(container_id, ifname)
    nft = Nft(runner)
    base = nft.chain_rules("bridge", TABLE, BASE_CHAIN)
    if base is None:
        return  # no table: nothing installed
    lines = [f"delete rule bridge {TABLE} {BASE_CHAIN} handle {r.handle}" for r in base
             if r.comment == comment]
    # Only an outside change leaves a chain without its jump: both are looked for.
    if not lines and all(nft.chain_rules("bridge", TABLE, name) is None
                         for name in (chain, f"{chain}-mac")):
        return
    for name in (chain, f"{chain}-mac"):
        lines += [f"add chain bridge {TABLE} {name}", f"flush chain bridge {TABLE} {name}",
                  f"delete chain bridge {TABLE} {name}"]
    nft.apply_checked(lines, f"cannot remove MAC spoof check for {ifname}")
