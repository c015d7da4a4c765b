"""The loopback role against the reference's (Debian 1.1.1, /usr/lib/cni/loopback) as the oracle:
the same calls in fresh namespaces give the same results and leave `lo` in the same state.

Intentional differences, asserted as such: an empty `dns` is left out (libcni >= 1.2 omits it
from a 1.x result, as our other roles do; Debian's older libcni prints `"dns": {}`), keys are in
libcni >= 1.2's order (sorted), cniVersion 1.1.0 is answered (Debian 1.1.1 refuses it: code 1),
error codes and details name the culprit where the reference says less, and the plugin's own or
the machine's namespace is refused (code 8), where the reference would take the host's `lo` down.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RunPlugin
from tests.integration.test_serve_common import Resident, call_log, no_server_env, resident
from tests.netns import Netns, PluginRun, delete_netns

REFERENCE = Path("/usr/lib/cni/loopback")
__all__ = ["resident"]  # fixture
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="no reference loopback")
REFERENCE_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:58:00:02", "sandbox": "/var/run/netns/x"}],
    "ips": [{"interface": 0, "address": "10.88.0.2/16", "gateway": "10.88.0.1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
}


def conf(version: str, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "lo-net", "type": "loopback", **extra}


def fresh(netns: Callable[[str], Netns], role: str) -> Netns:
    """A container namespace as a runtime makes it: `lo` down."""
    ns = netns(role)
    ns.run("ip", "link", "set", "lo", "down")
    return ns


def lo_state(ns: Netns) -> tuple[bool, list[str]]:
    """(lo is up, its addresses) as `ip -j` shows them."""
    link = ns.ip_json("link", "show", "lo")[0]
    addrs = ns.ip_json("addr", "show", "lo")[0].get("addr_info", [])
    return "UP" in link["flags"], [f"{a['local']}/{a['prefixlen']}" for a in addrs]


def as_ours(doc: dict[str, Any], sandbox: str) -> dict[str, Any]:
    """The reference's result without an empty dns, its sandbox replaced by ours (each ran in
    a namespace of its own)."""
    out = {k: v for k, v in doc.items() if not (k == "dns" and v == {})}
    if "interfaces" in out:
        out["interfaces"] = [{**i, "sandbox": sandbox} if i.get("sandbox") else i
                             for i in out["interfaces"]]
    return out


class Pair:
    """The same call through ours and the reference, each in its own container namespace."""

    def __init__(self, run_plugin: RunPlugin, host: Netns, netns: Callable[[str], Netns]):
        self.run_plugin, self.host = run_plugin, host
        self.ours, self.ref = fresh(netns, "Cours"), fresh(netns, "Cref")

    def call(self, command: str, config: Any, **kw: Any) -> tuple[PluginRun, PluginRun]:
        mine = self.run_plugin(self.host, "loopback", command, config, netns=self.ours, **kw)
        theirs = self.run_plugin(self.host, str(REFERENCE), command, config, netns=self.ref, **kw)
        return mine, theirs


@pytest.fixture
def pair(run_plugin: RunPlugin, host_ns: Netns, netns: Callable[[str], Netns]) -> Pair:
    return Pair(run_plugin, host_ns, netns)


@needs_reference
@pytest.mark.parametrize("version", REFERENCE_VERSIONS)
def test_add_check_del_as_the_reference(pair: Pair, version: str) -> None:
    mine, theirs = pair.call("ADD", conf(version))
    assert mine.rc == theirs.rc == 0, (mine.stdout, theirs.stdout)
    assert mine.json == as_ours(theirs.json, pair.ours.path) == {
        "cniVersion": version,
        "interfaces": [{"mac": "00:00:00:00:00:00", "name": "lo", "sandbox": pair.ours.path}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}],
    }
    assert lo_state(pair.ours) == lo_state(pair.ref) == (True, ["127.0.0.1/8", "::1/128"])
    assert [link["ifname"] for link in pair.ours.ip_json("link", "show")] == ["lo"]  # no eth0
    if version >= "0.4.0":
        mine, theirs = pair.call("CHECK", conf(version, prevResult=mine.json))
        assert mine.rc == theirs.rc == 0, (mine.stdout, theirs.stdout)
    mine, theirs = pair.call("DEL", conf(version))
    assert (mine.rc, mine.stdout) == (theirs.rc, theirs.stdout) == (0, "")
    assert lo_state(pair.ours) == lo_state(pair.ref)
    assert lo_state(pair.ours)[0] is False
    if version >= "0.4.0":
        mine, theirs = pair.call("CHECK", conf(version))
        assert mine.rc == theirs.rc == 1
        assert mine.json["msg"] == theirs.json["msg"] == "loopback interface is down"
        assert pair.ours.path in mine.json["details"]


def test_add_at_1_1_0_has_the_1_0_0_shape(run_plugin: RunPlugin, host_ns: Netns,
                                          netns: Callable[[str], Netns]) -> None:
    c = fresh(netns, "C")
    run = run_plugin(host_ns, "loopback", "ADD", conf("1.1.0"), netns=c)
    assert run.rc == 0
    # libcni >= 1.2 prints a 1.x result through a map: keys sorted, no empty dns.
    assert run.stdout == (
        '{\n    "cniVersion": "1.1.0",\n    "interfaces": [\n        {\n'
        '            "mac": "00:00:00:00:00:00",\n            "name": "lo",\n'
        f'            "sandbox": "{c.path}"\n        }}\n    ],\n    "ips": [\n'
        '        {\n            "address": "127.0.0.1/8",\n            "interface": 0\n'
        '        },\n        {\n            "address": "::1/128",\n'
        '            "interface": 0\n        }\n    ]\n}'
    )
    assert lo_state(c)[0] is True
    for verb in ("GC", "STATUS"):
        extra = {"cni.dev/valid-attachments": []} if verb == "GC" else {}
        done = run_plugin(host_ns, "loopback", verb, conf("1.1.0", **extra), netns=c)
        assert (done.rc, done.stdout) == (0, "")
    assert lo_state(c)[0] is True  # GC leaves a live container's lo alone


@needs_reference
@pytest.mark.parametrize("version", ("0.3.1", "0.4.0", "1.0.0"))
def test_a_prev_result_is_passed_through(pair: Pair, version: str) -> None:
    prev = {**PREV_RESULT, "cniVersion": version}
    if version < "1.0.0":
        prev["ips"] = [{**prev["ips"][0], "version": "4"}]
    mine, theirs = pair.call("ADD", conf(version, prevResult=prev))
    assert mine.rc == theirs.rc == 0, (mine.stdout, theirs.stdout)
    assert mine.json == as_ours(theirs.json, "/var/run/netns/x") | (
        {"dns": {}} if version < "1.0.0" else {})
    assert mine.json["ips"][0]["address"] == "10.88.0.2/16"
    assert lo_state(pair.ours)[0] is True


@needs_reference
def test_del_tolerates_a_gone_namespace_and_no_namespace(pair: Pair,
                                                         netns: Callable[[str], Netns]) -> None:
    gone = "/run/netns/cni-bridge-test-gone-ns"
    for netns_path in (gone, None):
        for impl in ("loopback", str(REFERENCE)):
            run = pair.run_plugin(pair.host, impl, "DEL", conf("1.0.0"), netns=netns_path)
            assert (run.rc, run.stdout) == (0, ""), (impl, netns_path, run.stdout)
    assert not Path(gone).exists()  # a DEL never creates the namespace it was given
    # A namespace deleted after ADD, as a runtime may do before DEL.
    c = fresh(netns, "Cdel")
    path = c.path
    assert pair.run_plugin(pair.host, "loopback", "ADD", conf("1.0.0"), netns=c).rc == 0
    delete_netns(c)
    run = pair.run_plugin(pair.host, "loopback", "DEL", conf("1.0.0"), netns=path)
    assert (run.rc, run.stdout) == (0, "")


@needs_reference
def test_a_non_loopback_address_on_lo_fails_add_as_the_reference(pair: Pair) -> None:
    for ns in (pair.ours, pair.ref):
        ns.run("ip", "addr", "add", "192.0.2.7/24", "dev", "lo")
    mine, theirs = pair.call("ADD", conf("1.0.0"))
    assert mine.rc == theirs.rc == 1
    assert mine.json["msg"] == theirs.json["msg"] == (
        'loopback interface found with non-loopback address "192.0.2.7"')


def test_the_plugins_own_namespace_is_refused(run_plugin: RunPlugin, host_ns: Netns) -> None:
    before = lo_state(host_ns)
    for verb in ("ADD", "CHECK", "DEL"):
        run = run_plugin(host_ns, "loopback", verb, conf("1.0.0"), netns=host_ns)
        assert run.rc == 1 and run.json["code"] == 8, run.stdout
        assert host_ns.path in run.json["details"]
    assert lo_state(host_ns) == before == (True, ["127.0.0.1/8", "::1/128"])


def test_bad_inputs_name_the_culprit(run_plugin: RunPlugin, host_ns: Netns,
                                     netns: Callable[[str], Netns], tmp_path: Path) -> None:
    c = fresh(netns, "C")
    not_ns = tmp_path / "not-a-netns"
    not_ns.write_text("")
    cases: list[tuple[str, dict[str, Any], Any, int, str]] = [
        ("ADD", {"netns": None}, conf("1.0.0"), 4, "CNI_NETNS"),
        ("ADD", {"container_id": None}, conf("1.0.0"), 4, "CNI_CONTAINERID"),
        ("ADD", {"ifname": "a/b"}, conf("1.0.0"), 4, "interface name"),
        ("ADD", {}, conf("9.9.9"), 1, "incompatible CNI versions"),
        ("ADD", {}, {**conf("1.0.0"), "name": "a/b"}, 7, "network name"),
        ("ADD", {}, "{not json", 6, "unmarshal"),
        ("CHECK", {}, conf("0.3.1"), 1, "CHECK"),
        ("GC", {}, conf("1.0.0"), 1, "GC"),
        ("ADD", {"netns": str(not_ns)}, conf("1.0.0"), 999, str(not_ns)),
        ("DEL", {"netns": str(not_ns)}, conf("1.0.0"), 999, str(not_ns)),
        ("ADD", {"netns": "/run/netns/cni-bridge-test-gone-ns"}, conf("1.0.0"), 999,
         "cni-bridge-test-gone-ns"),
    ]
    before = lo_state(c)
    for verb, kw, config, code, culprit in cases:
        run = run_plugin(host_ns, "loopback", verb, config, **{"netns": c, **kw})
        assert run.rc == 1 and run.json["code"] == code, (verb, kw, run.stdout)
        assert culprit in run.json["msg"] + run.json.get("details", ""), (verb, kw, run.stdout)
    assert lo_state(c) == before and before[0] is False  # nothing reached the container
    assert not Path("/run/netns/cni-bridge-test-gone-ns").exists()


def test_served_calls_give_what_standalone_calls_give(
        host_ns: Netns, netns: Callable[[str], Netns], run_plugin: RunPlugin,
        resident: Callable[..., Resident], tmp_path: Path) -> None:
    server = resident()
    log = tmp_path / "calls.jsonl"
    outcomes: dict[str, list[tuple[int, Any, tuple[bool, list[str]]]]] = {}
    for mode, env in (("served", {}), ("standalone", no_server_env())):
        c = fresh(netns, f"C-{mode}")
        outcomes[mode] = []
        for verb in ("ADD", "CHECK", "DEL", "CHECK", "STATUS"):
            run = run_plugin(host_ns, "loopback", verb, conf("1.1.0"), netns=c,
                             env={**env, "CNI_BRIDGE_LOG": str(log)})
            doc = as_ours(run.json, "C") if verb == "ADD" else run.json
            outcomes[mode].append((run.rc, doc and doc.get("msg", doc), lo_state(c)))
    assert outcomes["served"] == outcomes["standalone"]
    assert [rc for rc, _, _ in outcomes["served"]] == [0, 0, 0, 1, 0]
    served = [(r["role"], r["verb"]) for r in call_log(log) if r["served"]]
    assert served == [("loopback", v) for v in ("ADD", "CHECK", "DEL", "CHECK", "STATUS")]
    assert sum(server.served().values()) == 5
