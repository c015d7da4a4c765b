"""The test infrastructure itself: namespaces, topology, plugin runner contract, echo helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conflist_runner import Runtime, RuntimeConf, parse_conflist
from tests.integration.conftest import RunPlugin, dump_state
from tests.netns import (
    PREFIX,
    ContractViolation,
    Netns,
    create_netns,
    delete_netns,
    echo_server,
    probe,
    sweep,
    veth_between,
    wait_ipv6_settled,
    wait_until,
)

RUNNER = Path(__file__).resolve().parents[1] / "conflist_runner.py"


def _exists(ns: Netns) -> bool:
    return os.path.exists(ns.path)


def test_create_and_delete_netns() -> None:
    ns = create_netns("T")
    try:
        assert ns.name.startswith(PREFIX) and ns.name.endswith("-T")
        assert ns.path == f"/run/netns/{ns.name}"
        lo = ns.ip_json("link", "show", "lo")[0]
        assert "UP" in lo["flags"]
        # A fresh namespace has forwarding off: proves sysctl reads the namespace's /proc/sys.
        assert ns.sysctl("net.ipv4.ip_forward") == "0"
    finally:
        delete_netns(ns)
    assert not _exists(ns)
    delete_netns(ns)  # tolerant when already gone


def test_delete_removes_veths_and_leftover_processes() -> None:
    a, b = create_netns("A"), create_netns("B")
    try:
        veth_between(a, "va", b, "vb")
        sleeper = subprocess.Popen(
            ["ip", "netns", "exec", a.name, "sleep", "60"], stdin=subprocess.DEVNULL
        )
        delete_netns(a)
        assert sleeper.wait(timeout=5) != 0
        assert not _exists(a)
        # The peer went with the pair, so b can host a new "vb" straight away.
        assert b.ip_json("link", "show", "type", "veth") == []
    finally:
        delete_netns(a)
        delete_netns(b)


def test_sweep_removes_only_our_prefix() -> None:
    ours = create_netns("S")
    sweep()
    assert not _exists(ours)


@pytest.fixture
def made_by_factory() -> Iterator[list[Netns]]:
    """Set up before `netns`, so torn down after it: checks the factory's cleanup."""
    made: list[Netns] = []
    yield made
    assert made and not any(_exists(ns) for ns in made)


def test_factory_namespaces_removed_at_teardown(
    made_by_factory: list[Netns], netns: Callable[[str], Netns]
) -> None:
    made_by_factory += [netns("C1"), netns("C2")]
    assert all(_exists(ns) for ns in made_by_factory)


def test_sysctl_write_is_per_namespace(host_ns: Netns) -> None:
    host_ns.write_sysctl("net.ipv4.ip_forward", "1")
    assert host_ns.sysctl("net/ipv4/ip_forward") == "1"


def test_outside_topology(host_ns: Netns, outside_ns: Netns) -> None:
    routes = {r["dst"]: r.get("gateway") for r in host_ns.ip_json("route", "show")}
    assert routes["default"] == "198.51.100.2"
    routes6 = {r["dst"]: r.get("gateway") for r in host_ns.ip_json("-6", "route", "show")}
    assert routes6["default"] == "2001:db8:ff::2"
    assert outside_ns.ip_json("route", "show", "default") == []
    assert outside_ns.ip_json("-6", "route", "show", "default") == []
    # The link carries traffic both ways in both families (no ping on these machines).
    for to in ("198.51.100.2", "2001:db8:ff::2"):
        with echo_server(outside_ns, "udp", 7000):
            assert probe(host_ns, "udp", to, 7000).ok
    with echo_server(host_ns, "udp", 7000):
        assert probe(outside_ns, "udp", "198.51.100.1", 7000).ok


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_echo_server_reports_peer(host_ns: Netns, outside_ns: Netns, proto: str) -> None:
    with echo_server(outside_ns, proto, 8080) as server:
        result = probe(host_ns, proto, "198.51.100.2", 8080)
        assert result.ok, result.output
        assert result.local == "198.51.100.1"
        assert result.reply == "pong"
    assert server.peer == "198.51.100.1"


def test_echo_server_v6(host_ns: Netns, outside_ns: Netns) -> None:
    with echo_server(outside_ns, "tcp", 8081, bind="2001:db8:ff::2", reply="hi") as server:
        result = probe(host_ns, "tcp", "2001:db8:ff::2", 8081)
    assert result.ok and result.reply == "hi"
    assert server.peer == "2001:db8:ff::1"


def test_probe_fails_without_server(host_ns: Netns, outside_ns: Netns) -> None:
    assert not probe(host_ns, "udp", "198.51.100.2", 9, timeout=0.5).ok
    assert not probe(host_ns, "tcp", "198.51.100.2", 9, timeout=0.5).ok


def test_plugin_dir_has_roles(plugin_dir: Path) -> None:
    for role in ("bridge", "host-local", "portmap"):
        assert os.access(plugin_dir / role, os.X_OK)


@pytest.mark.parametrize(
    "body",
    ["echo not json", """echo '{"a": 1}'; echo '{"b": 2}'""", """echo '{"a": 1'"""],
    ids=["text", "two-documents", "truncated"],
)
def test_contract_catches_bad_stdout(
    host_ns: Netns, run_plugin: RunPlugin, tmp_path: Path, body: str
) -> None:
    fake = _script(tmp_path, "bad-stdout", body)
    with pytest.raises(ContractViolation, match="not exactly one JSON"):
        run_plugin(host_ns, fake, "ADD", {})


def test_contract_catches_failure_without_error_object(
    host_ns: Netns, run_plugin: RunPlugin
) -> None:
    with pytest.raises(ContractViolation):
        run_plugin(host_ns, "/bin/false", "ADD", {})


def test_contract_accepts_empty_line(host_ns: Netns, run_plugin: RunPlugin) -> None:
    # /bin/echo without arguments prints just a newline: "empty stdout" for the contract.
    assert run_plugin(host_ns, "/bin/echo", "DEL", {}).json is None


def test_contract_catches_error_without_code(
    host_ns: Netns, run_plugin: RunPlugin, tmp_path: Path
) -> None:
    fake = _script(tmp_path, "bad-error", 'echo \'{"msg": "no code"}\'; exit 1')
    with pytest.raises(ContractViolation, match="integer 'code'"):
        run_plugin(host_ns, fake, "ADD", {})


def test_runner_env_and_stdin(
    host_ns: Netns, run_plugin: RunPlugin, plugin_dir: Path, tmp_path: Path
) -> None:
    """Only CNI_* and PATH reach the plugin; None omits a variable; config arrives on stdin."""
    fake = _script(
        tmp_path,
        "dump",
        'cat > "$0.stdin"; env | sort > "$0.env"; echo \'{"code": 7, "msg": "x"}\'; exit 1',
    )
    extra = {"CNI_ARGS": None, "CNI_EXTRA": "1"}
    run = run_plugin(host_ns, fake, "ADD", {"name": "n"}, netns=host_ns, ifname=None, env=extra)
    assert run.rc == 1 and run.json == {"code": 7, "msg": "x"}
    env = dict(line.split("=", 1) for line in Path(fake + ".env").read_text().splitlines())
    assert env.pop("PATH")
    env.pop("PWD", None)  # sh exports it itself
    env.pop("CNI_BRIDGE_STATE_DIR", None)  # the suite's private record dir, passed through
    env.pop("CNI_BRIDGE_SOCKET", None)  # a private resident server, passed through
    assert env == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": host_ns.path,
        "CNI_PATH": str(plugin_dir),
        "CNI_EXTRA": "1",
    }
    assert Path(fake + ".stdin").read_text() == '{"name": "n"}'


def test_runner_accepts_empty_success(
    host_ns: Netns, run_plugin: RunPlugin, tmp_path: Path
) -> None:
    fake = _script(tmp_path, "quiet", "exit 0")
    run = run_plugin(host_ns, fake, "DEL", "not json is fine: stdin is not checked")
    assert (run.rc, run.stdout, run.json) == (0, "", None)


def test_reference_plugin_runs_the_same_way(host_ns: Netns, run_plugin: RunPlugin) -> None:
    run = run_plugin(host_ns, "/usr/lib/cni/bridge", "VERSION", {"cniVersion": "1.0.0"})
    assert run.rc == 0 and "1.0.0" in run.json["supportedVersions"]


def _script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_runtime_drives_reference_plugins(
    host_ns: Netns, outside_ns: Netns, netns: Callable[[str], Netns], tmp_path: Path
) -> None:
    """The runner in H with the Debian plugins: ADD, masqueraded traffic to O, CHECK, DEL."""
    pod = netns("C1")
    conf = parse_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "fixnet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "fixbr0",
                    "isGateway": True,
                    "ipMasq": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.99.0.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(tmp_path / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
    )
    runtime = Runtime(["/usr/lib/cni"], str(tmp_path / "cache"), host_ns)
    rt = RuntimeConf("fixc1", pod.path, "eth0", "", {"portMappings": []})
    result = runtime.add(conf, rt)
    try:
        assert result["ips"][0]["address"] == "10.99.0.2/24"
        assert runtime.calls[1].config["runtimeConfig"] == {"portMappings": []}
        with echo_server(outside_ns, "tcp", 8080) as server:
            assert probe(pod, "tcp", "198.51.100.2", 8080).ok
        assert server.peer == "198.51.100.1"  # masqueraded to H's uplink address
        runtime.check(conf, rt)
    finally:
        runtime.delete(conf, rt)
    assert runtime.cache_entry("fixnet", rt) is None
    assert not _link_exists(pod, "eth0")


def _link_exists(ns: Netns, ifname: str) -> bool:
    return ns.run("ip", "link", "show", ifname, check=False).returncode == 0


def test_runner_cli_in_host_ns(
    host_ns: Netns, netns: Callable[[str], Netns], tmp_path: Path
) -> None:
    pod = netns("C1")
    pod.run("ip", "link", "set", "lo", "down")
    conf = tmp_path / "lo.conflist"
    conf.write_text('{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}')
    base = [sys.executable, str(RUNNER), "--conflist", str(conf), "--cache", str(tmp_path)]
    base += ["--plugin-dir", "/usr/lib/cni", "--host-ns", host_ns.name]
    base += ["--netns", pod.path, "--id", "c1", "--ifname", "lo"]
    added = subprocess.run([*base[:2], "add", *base[2:]], capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["interfaces"][0]["name"] == "lo"
    assert "UP" in pod.ip_json("link", "show", "lo")[0]["flags"]


def test_failure_dump_shows_host_state(host_ns: Netns) -> None:
    assert "### ip -d addr" in dump_state(host_ns)


def test_wait_ipv6_settled(netns: Callable[[str], Netns]) -> None:
    a, b = netns("A"), netns("B")
    veth_between(a, "va", b, "vb")
    a.run("ip", "addr", "add", "2001:db8:1::1/64", "dev", "va")  # with DAD
    wait_ipv6_settled(a)
    assert a.ip_json("-6", "addr", "show", "tentative") == []
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, "never", timeout=0.1)
