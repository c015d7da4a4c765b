"""Attach many background containers quickly by cloning what one real ADD left behind.

A real ADD through libcni costs 0.1-0.5 s; a thousand of them per implementation would take most
of the benchmark's time budget. What makes the next call slower on a busy node is the state in
H: the veths on the bridge, the firewall rules and sets, the IPAM files and records. So:

1. two real ADDs (T0, then T1) through the client; snapshots of H's state after each
   (``iptables-save``/``ip6tables-save``, ``nft -j list ruleset`` for tables iptables does not
   own, and every file under the IPAM data dir and CNI_BRIDGE_STATE_DIR);
2. what T1 added (T0 created the shared skeleton) is one container's worth of state;
3. clone it N times with T1's tokens replaced: container ID, ifname, IP, host port, and every
   hex/number token that first appeared with T1 (chain-name hashes, owner tags, marks);
4. apply the clones in one ``iptables-restore --noflush`` per family, one ``nft -j -f``, one
   ``ip -batch`` for the veth pairs (host end on the bridge, container end in the shared
   background namespace), and plain file writes.

Rules appended to shared chains keep T1's form; per-container chains get fresh names. If T1 added
anything this cannot clone (new nft chains or rules), the caller falls back to real ADDs.
``bench.py --populate real`` validates the clones against real ADDs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni_bridge.ipam.host_local.index import INDEX_DIR

IPTABLES_TABLES = {"nat", "filter", "mangle", "raw", "security"}
TOKEN_RE = re.compile(r"[0-9a-f]{8,}")

Runner = Callable[[list[str], str | None], str]  # argv, stdin -> stdout (raises on failure)


class CannotClone(Exception):
    pass


@dataclass
class Snapshot:
    iptables: dict[str, dict[str, list[str]]]  # family -> table -> lines (":chain" / "-A ...")
    nft_elements: dict[tuple[str, str, str], list[str]]  # (family, table, set) -> JSON elems
    nft_other: set[str]  # JSON of every other nft object (chains, rules, sets' definitions)
    files: dict[str, bytes]  # path relative to the world root -> content

    def text(self) -> str:
        parts = [line for fam in self.iptables.values() for t in fam.values() for line in t]
        parts += [e for elems in self.nft_elements.values() for e in elems]
        parts += sorted(self.nft_other)
        parts += [p + "\n" + c.decode(errors="replace") for p, c in self.files.items()]
        return "\n".join(parts)


def parse_save(text: str) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif current is not None and (line.startswith(":") or line.startswith("-A ")):
            # ":CHAIN POLICY [packets:bytes]": the counters are not state, dropped here
            current.append(line.rsplit(" ", 1)[0] if line.startswith(":") else line)
    return tables


def snapshot(run: Runner, roots: list[Path], base: Path) -> Snapshot:
    ipt = {"4": parse_save(run(["iptables-save"], None)),
           "6": parse_save(run(["ip6tables-save"], None))}
    elements: dict[tuple[str, str, str], list[str]] = {}
    other: set[str] = set()
    for obj in json.loads(run(["nft", "-j", "list", "ruleset"], None))["nftables"]:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        if body.get("family") in ("ip", "ip6") and body.get("table", body.get("name")) \
                in IPTABLES_TABLES:
            continue  # iptables-nft's own tables: seen through iptables-save
        if kind in ("set", "map"):
            key = (body["family"], body["table"], body["name"])
            elements[key] = [json.dumps(e, sort_keys=True) for e in body.get("elem", [])]
            body = {k: v for k, v in body.items() if k != "elem"}
        body = {k: v for k, v in body.items() if k != "handle"}
        other.add(json.dumps({kind: body}, sort_keys=True))
    files = {str(p.relative_to(base)): p.read_bytes()
             for root in roots for p in sorted(root.rglob("*")) if p.is_file()}
    return Snapshot(ipt, elements, other, files)


def _added(before: list[str], after: list[str]) -> list[str]:
    left = Counter(before)
    out = []
    for item in after:
        if left[item]:
            left[item] -= 1
        else:
            out.append(item)
    return out


@dataclass
class Template:
    """One container's worth of state (what T1 added), with T1's identifying tokens."""

    container_id: str
    ifname: str
    ip: ipaddress.IPv4Address
    port: int
    iptables: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    nft: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)

    @classmethod
    def from_snapshots(cls, s0: Snapshot, s1: Snapshot, container_id: str, ifname: str,
                       ip: ipaddress.IPv4Address, port: int) -> Template:
        t = cls(container_id, ifname, ip, port)
        if s1.nft_other - s0.nft_other:
            raise CannotClone(f"T1 added nft objects: {sorted(s1.nft_other - s0.nft_other)[:3]}")
        for fam, tables in s1.iptables.items():
            for table, lines in tables.items():
                new = _added(s0.iptables.get(fam, {}).get(table, []), lines)
                if new:
                    t.iptables.setdefault(fam, {})[table] = new
        for key, elems in s1.nft_elements.items():
            new = _added(s0.nft_elements.get(key, []), elems)
            if new:
                t.nft[key] = new
        for path, content in s1.files.items():
            # host-local's index is a cache: clones change the store, so the next call rescans
            if s0.files.get(path) != content and "last_reserved_ip" not in path \
                    and not path.endswith("/lock") and f"/{INDEX_DIR}/" not in path:
                t.files[path] = content
        before = s0.text()
        t.tokens = {tok for tok in TOKEN_RE.findall(s1.text()) if tok not in before}
        return t

    def substituter(self, index: int, ip: ipaddress.IPv4Address, container_id: str,
                    ifname: str, port: int) -> Callable[[str], str]:
        mapping = {self.container_id: container_id, self.ifname: ifname, str(self.ip): str(ip),
                   str(self.port): str(port)}
        for tok in self.tokens:
            digest = hashlib.sha256(f"{tok}/{index}".encode()).hexdigest()
            if tok.isdigit():  # a mark or owner number: same length, below 2**32 when it was
                low, high = 10 ** (len(tok) - 1), min(10 ** len(tok), 2 ** 32)
                mapping[tok] = str(low + int(digest, 16) % (high - low))
            else:
                mapping[tok] = (digest * 4)[:len(tok)]
        ip_re = re.escape(str(self.ip))
        pattern = re.compile(
            rf"(?<![\w-]){re.escape(self.container_id)}(?![\w-])"
            rf"|(?<![\w]){re.escape(self.ifname)}(?![\w])"
            rf"|(?<![\d.]){ip_re}(?!\d)"
            rf"|(?<![\w]){self.port}(?!\w)"
            r"|[0-9a-f]{8,}")
        return lambda text: pattern.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def _chain_name(line: str) -> str:
    return line[1:].split(" ", 1)[0]


def apply_clones(run: Runner, t: Template, clones: list[tuple[int, ipaddress.IPv4Address, str,
                 str, int]], base: Path, bridge: str, background_netns: str) -> None:
    """clones: (index, ip, container_id, ifname, port) each."""
    subs = [(c, t.substituter(*c)) for c in clones]
    for fam, tables in t.iptables.items():
        out = []
        for table, lines in tables.items():
            chains = [line for line in lines if line.startswith(":")]
            rules = [line for line in lines if not line.startswith(":")]
            out.append(f"*{table}")
            out += [sub(line) + " [0:0]" for _, sub in subs for line in chains]
            out += [sub(line) for _, sub in subs for line in rules]
            out.append("COMMIT")
        tool = "iptables-restore" if fam == "4" else "ip6tables-restore"
        run([tool, "--noflush"], "\n".join(out) + "\n")
    if t.nft:
        batch = []
        for (family, table, name), elems in t.nft.items():
            cloned = [json.loads(sub(e)) for _, sub in subs for e in elems]
            batch.append({"add": {"element": {"family": family, "table": table, "name": name,
                                              "elem": cloned}}})
        run(["nft", "-j", "-f", "-"], json.dumps({"nftables": batch}))
    for _, sub in subs:
        for path, content in t.files.items():
            target = base / sub(path)
            if target.exists():
                raise CannotClone(f"clone would overwrite {target}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(sub(content.decode()).encode())
    lines = []
    for index, _, _, ifname, _ in clones:
        host = f"vcl{index:07d}"
        lines.append(f"link add {host} type veth peer name {ifname} netns {background_netns}")
        lines.append(f"link set {host} master {bridge} up")
    run(["ip", "-batch", "-"], "\n".join(lines) + "\n")
    run(["ip", "-n", background_netns, "-batch", "-"],
        "".join(f"link set {c[3]} up\n" for c in clones))


def chain_names(t: Template) -> list[str]:
    return [_chain_name(line) for tables in t.iptables.values() for lines in tables.values()
            for line in lines if line.startswith(":")]


def summary(t: Template) -> dict[str, Any]:
    return {"iptables_lines": sum(len(v) for f in t.iptables.values() for v in f.values()),
            "nft_elements": sum(len(v) for v in t.nft.values()),
            "files": sorted(t.files), "tokens": len(t.tokens)}
