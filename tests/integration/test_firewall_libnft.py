"""nft scripts run in-process by libnftables (firewall/nft_lib.py), against the real kernel.

Each case runs a Python child inside throwaway namespaces (the test process never changes
namespace): the in-process executor must commit, read and dry-run like the ``nft`` command,
report a failing batch with the same text, follow the process into another namespace (setns,
fork), and fall back to the command when the library cannot be loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.nft.executor import NftCommand
from cni_bridge.firewall.nft.state import Listing
from tests.integration.test_firewall_common import NsRunner, mapping, masq, owner, python_in
from tests.netns import Netns

# Runs each script of argv[1] (a JSON list) with the in-process executor and prints the
# results; "setns:<path>" enters that namespace, "fork:<path>" runs the rest in a forked child
# that enters it first. A library that cannot be loaded is never silently replaced here.
CHILD = r"""
import ctypes, json, os, sys
from cni_bridge.firewall.nft import libnft as nft_lib
from cni_bridge.firewall.nft.executor import NftCommand
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.nft.state import Listing
from cni_bridge.firewall.commands import SubprocessRunner

class NoFallback:
    def __call__(self, script, **options):
        raise SystemExit("fell back to the nft command")

if os.environ.get("NFT_LIBRARY"):
    nft_lib.LIBRARY = os.environ["NFT_LIBRARY"]
    run = nft_lib.InProcessNft(NftCommand(SubprocessRunner()))
else:
    run = nft_lib.InProcessNft(NoFallback())
libc = ctypes.CDLL(None, use_errno=True)

def enter(path):
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)

out = []
steps = json.loads(sys.argv[1])
for i, step in enumerate(steps):
    if step["script"].startswith("setns:"):
        enter(step["script"][6:])
        continue
    if step["script"].startswith("fork:"):
        pid = os.fork()
        if pid == 0:
            enter(step["script"][5:])
            continue
        os.waitpid(pid, 0)
        break
    r = run(step["script"], json=step.get("json", False), dry_run=step.get("dry_run", False))
    out.append({"argv": r.argv, "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr})
print(json.dumps(out), flush=True)
"""

Step = dict[str, object]


def in_process(ns: Netns, steps: list[Step], library: str = "") -> list[dict[str, object]]:
    out = python_in(ns, CHILD, json.dumps(steps), env={"NFT_LIBRARY": library} if library else {})
    results: list[dict[str, object]] = json.loads(out.splitlines()[-1])
    return results


def tables(ns: Netns) -> list[str]:
    listing = json.loads(ns.run("nft", "-j", "list", "tables").stdout)["nftables"]
    return sorted(f"{t['table']['family']} {t['table']['name']}" for t in listing if "table" in t)


BATCH = "\n".join(["add table inet t", "add map inet t m { type ipv4_addr : verdict; }",
                   "add element inet t m { 10.0.0.1 : accept }", ""])
CONFLICT = "add element inet t m { 10.0.0.2 : accept }\nadd element inet t m { 10.0.0.1 : drop }\n"


def test_batches_reads_and_dry_runs_match_the_command(host_ns: Netns) -> None:
    (check, batch, listing, conflict, again) = in_process(host_ns, [
        {"script": BATCH, "dry_run": True}, {"script": BATCH},
        {"script": "list map inet t m", "json": True}, {"script": CONFLICT},
        {"script": CONFLICT, "dry_run": True}])
    assert check["rc"] == 0 and batch["rc"] == 0
    assert check["argv"] == ["nft", "-c", "-f", "-"] and batch["argv"] == ["nft", "-f", "-"]
    assert listing["argv"] == ["nft", "-j", "list", "map", "inet", "t", "m"]
    elements = [o["map"]["elem"] for o in json.loads(str(listing["stdout"]))["nftables"]
                if "map" in o]
    assert elements == [[["10.0.0.1", {"accept": None}]]]
    # A failing batch commits nothing and names the line that failed, as `nft -f -` does.
    assert conflict["rc"] == 1 and again["rc"] == 1
    command = NftCommand(NsRunner(host_ns))(CONFLICT)
    assert command.returncode == 1
    assert conflict["stderr"] == command.stderr
    assert str(conflict["stderr"]).startswith("/dev/stdin:2:")
    assert "add element inet t m { 10.0.0.1 : drop }" in str(conflict["stderr"])
    assert "10.0.0.2" not in host_ns.run("nft", "list", "map", "inet", "t", "m").stdout


def test_a_context_follows_the_process_into_another_namespace(
        netns: Callable[[str], Netns]) -> None:
    """The context is made lazily and per namespace: after setns() or in a forked child that
    entered another namespace, scripts go to the namespace the process is in now."""
    first, second, third = netns("A"), netns("B"), netns("C")
    in_process(first, [{"script": "add table inet in_a\n"},
                       {"script": f"setns:{second.path}"}, {"script": "add table inet in_b\n"},
                       {"script": f"fork:{third.path}"}, {"script": "add table inet in_c\n"}])
    assert tables(first) == ["inet in_a"]
    assert tables(second) == ["inet in_b"]
    assert tables(third) == ["inet in_c"]


def test_without_the_library_the_command_runs(host_ns: Netns) -> None:
    (batch, listing) = in_process(host_ns, [{"script": BATCH},
                                            {"script": "list table inet t", "json": True}],
                                  library="libnftables-missing.so.1")
    assert batch["rc"] == 0 and listing["rc"] == 0
    assert tables(host_ns) == ["inet t"]
    assert '"name": "m"' in str(listing["stdout"])


# Reads the kernel over netlink in `ns` and prints what nft_netlink found, to be compared with
# nft's own JSON listing of the same state.
NETLINK_READS = r"""
import json
from cni_bridge.firewall.nft import netlink as nft_netlink
from cni_bridge.firewall.nft.client import Nft
from cni_bridge.firewall.commands import SubprocessRunner

class Command:  # the nft command, for the listing to compare with
    def __call__(self, argv, input=None):
        return SubprocessRunner()(argv, input)

listing = Nft(Command()).table("inet", "cni_bridge")
every = listing.all_elements()
skeleton = nft_netlink.skeleton("inet", "cni_bridge")
by_key = nft_netlink.elements("inet", "cni_bridge", every)
chains = (("bridge", "nat", "PREROUTING"), ("inet", "cni_bridge", "isolation_forward"))
rules = {c: [[r.handle, r.comment] for r in nft_netlink.chain_rules(f, t, c) or ()]
         for f, t, c in chains}
print(json.dumps({
    "elements": len(every),
    "same_elements": by_key is not None and all(by_key.get(e.map, e.key) == e for e in every),
    "same_maps": sorted(skeleton.maps) == sorted(listing.maps),
    "same_counts": {n: c.rule_count for n, c in skeleton.chains.items()}
                   == {n: c.rule_count for n, c in listing.chains.items()},
    "missing_table": nft_netlink.skeleton("inet", "no_such_table") is None,
    "missing_chain": nft_netlink.chain_rules("inet", "cni_bridge", "no_such_chain") is None,
    "isolated": nft_netlink.has_elements("inet", "cni_bridge", "isolated_bridge_self",
                                         "ifname . ifname", [("br-a", "br-a")]),
    "not_isolated": nft_netlink.has_elements("inet", "cni_bridge", "isolated_bridges",
                                             "ifname", [("br-a",), ("br-z",)]),
    "rules": rules,
}))
"""


def test_netlink_reads_match_the_listing(host_ns: Netns) -> None:
    """Chains, maps, rule counts, every element (all map types: addresses of both families,
    protocols, ports, marks, verdicts, comments), rule handles and comments, set membership:
    what nft_netlink reads by key is what ``nft -j list`` shows."""
    from cni_bridge.firewall.model import PortmapOptions
    from cni_bridge.firewall.nft import isolation, spoofcheck
    from cni_bridge.firewall.nft.backend import NftablesBackend

    runner = NsRunner(host_ns)
    backend = NftablesBackend(runner)
    for i, (v4, v6) in enumerate([("10.88.0.2/16", "fd00::2/64"), ("10.88.0.3/16", "fd00::3/64")]):
        who = owner(f"c{i}")
        backend.add_masquerade(masq(who, v4, v6))
        backend.add_portmappings([
            mapping(who, "tcp", 8080 + i, v4, 80), mapping(who, "udp", 5353 + i, v6, 53),
            mapping(who, "sctp", 9000 + i, v4, 9, host_ip="192.0.2.1"),
            mapping(who, "tcp", 7000 + i, v6, 7, host_ip="2001:db8::1")], PortmapOptions())
        spoofcheck.add_spoofcheck(runner, f"c{i}", "eth0", f"veth{i}", "0a:58:0a:4d:00:02")
    isolation.ensure_isolated(runner, ["br-a", "br-a.5"])
    found = json.loads(python_in(host_ns, NETLINK_READS).splitlines()[-1])
    assert found["elements"] >= 20
    assert found["same_elements"] and found["same_maps"] and found["same_counts"]
    assert found["missing_table"] and found["missing_chain"]
    assert found["isolated"] and not found["not_isolated"]
    listed = json.loads(host_ns.run("nft", "-j", "list", "chain", "bridge", "nat",
                                    "PREROUTING").stdout)["nftables"]
    assert found["rules"]["PREROUTING"] == [[r["rule"]["handle"], r["rule"]["comment"]]
                                            for r in listed if "rule" in r]
    assert [c for _, c in found["rules"]["isolation_forward"]] == [isolation.DROP_COMMENT]


# Reads the skeleton of our table over and over for `seconds` while another process rewrites
# its chains; prints how many reads saw rule counts other than the real ones.
SKELETON_READER = r"""
import json, sys, time
from cni_bridge.firewall.nft import netlink as nft_netlink
expected = json.loads(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
reads = wrong = 0
while time.monotonic() < deadline:
    found = nft_netlink.skeleton("inet", "cni_bridge")
    counts = {n: c.rule_count for n, c in found.chains.items() if n in expected}
    reads += 1
    wrong += counts != expected
print(json.dumps({"reads": reads, "wrong": wrong}))
"""


def test_a_skeleton_read_is_one_generation_of_the_ruleset(host_ns: Netns) -> None:
    """CHECK reads chains, maps and rules in several dumps while concurrent ADDs flush and
    refill the shared chains: a read spanning a commit would count rules twice. The reads are
    repeated until the generation they saw did not move."""
    import subprocess
    import sys

    from cni_bridge.firewall.nft import schema as nft_schema

    skeleton = nft_schema.hostport_table_lines((), (), True, [])
    script = "\n".join(skeleton) + "\n"
    NftCommand(NsRunner(host_ns))(script)
    expected = {n: c.rule_count for n, c in
                (Nft(NsRunner(host_ns)).table("inet", "cni_bridge") or Listing()).chains.items()}
    assert sum(expected.values()) >= 5
    writer = subprocess.Popen(
        ["ip", "netns", "exec", host_ns.name, sys.executable, "-c",
         "import subprocess, sys, time\n"
         "end = time.monotonic() + 4\n"
         "n = 0\n"
         "while time.monotonic() < end:\n"
         "    subprocess.run(['nft', '-f', '-'], input=sys.argv[1], text=True, check=True)\n"
         "    n += 1\n"
         "print(n)\n", script], stdout=subprocess.PIPE, text=True)
    try:
        found = json.loads(python_in(host_ns, SKELETON_READER, json.dumps(expected), "3"))
    finally:
        commits = int(writer.communicate(timeout=30)[0])
    assert commits > 20 and found["reads"] > 20
    assert found["wrong"] == 0, found
