"""The operator CLI: argument parsing, output formatting, and commands run against fake plugins
and temp directories (no root needed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cni_bridge.admin import main as operator
from cni_bridge.admin import parser, report
from cni_bridge.admin.examine import AttachmentState, NetworkStatus

FAKE_PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
command = os.environ["CNI_COMMAND"]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"command": command, "plugin": os.path.basename(sys.argv[0]),
                           "id": os.environ.get("CNI_CONTAINERID"), "conf": conf}}) + "\\n")
if command == "ADD":
    if conf.get("failAdd"):
        print(json.dumps({{"code": 7, "msg": "bad config", "details": "field x"}}))
        print("the plugin log line", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({{"cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": "br9"}}, {{"name": "veth1234"}},
                       {{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}}],
        "ips": [{{"address": "10.9.0.2/24", "gateway": "10.9.0.1", "interface": 2}}],
        "routes": [{{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}}]}}))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    plugins, conf, cache, data = (tmp_path / d for d in ("plugins", "conf", "cache", "data"))
    plugins.mkdir()
    conf.mkdir()
    for name in ("bridge", "portmap"):
        (plugins / name).write_text(FAKE_PLUGIN.format(python=sys.executable,
                                                       log=str(tmp_path / "calls.jsonl")))
        (plugins / name).chmod(0o755)
    (conf / "10-test.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "testnet", "plugins": [
            {"type": "bridge", "bridge": "br9",
             "ipam": {"type": "host-local", "dataDir": str(data),
                      "ranges": [[{"subnet": "10.9.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    return {"plugins": plugins, "conf": conf, "cache": cache, "data": data, "tmp": tmp_path}


def dirs(env: dict[str, Path]) -> list[str]:
    return ["--conf-dir", str(env["conf"]), "--cache-dir", str(env["cache"]),
            "--plugin-dir", str(env["plugins"])]


def calls(env: dict[str, Path]) -> list[dict[str, Any]]:
    log = env["tmp"] / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNI_BRIDGE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:5353/udp", {"hostPort": 53, "containerPort": 5353, "protocol": "udp"}),
    ("9:9/SCTP", {"hostPort": 9, "containerPort": 9, "protocol": "sctp"}),
    ("127.0.0.1:8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
                           "hostIP": "127.0.0.1"}),
    ("[2001:db8::1]:443:8443/tcp", {"hostPort": 443, "containerPort": 8443, "protocol": "tcp",
                                    "hostIP": "2001:db8::1"}),
])
def test_parse_port(text: str, expected: dict[str, Any]) -> None:
    assert parser.parse_port(text) == expected


@pytest.mark.parametrize("text", [
    "8080", "a:80", "8080:80/icmp", "0:80", "8080:70000", "1.2.3:80:80", "[::1:80:80",
    "1:2:3:4",
])
def test_parse_port_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:CONTAINER"):
        parser.parse_port(text)


def test_parse_valid() -> None:
    assert parser.parse_valid("abc/eth0") == ("abc", "eth0")
    for bad in ("abc", "/eth0", "abc/"):
        with pytest.raises(argparse.ArgumentTypeError, match="CONTAINERID/IFNAME"):
            parser.parse_valid(bad)


def test_netns_names_and_paths() -> None:
    assert operator.netns_path("ctr1") == "/run/netns/ctr1"
    assert operator.netns_path("/proc/42/ns/net") == "/proc/42/ns/net"


def test_default_container_id_is_stable_and_valid() -> None:
    one = operator.default_container_id("/run/netns/a")
    assert one == operator.default_container_id("/run/netns/a")
    assert one != operator.default_container_id("/run/netns/b")
    assert one.startswith("cni-bridge-") and len(one) == len("cni-bridge-") + 20


@pytest.mark.parametrize("command", ["version", "demo", "install", "add", "check", "del",
                                     "status", "gc", "reconcile"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        operator.main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: cni-bridge {command}")


def test_hidden_echo_is_not_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        operator.main(["--help"])
    assert "_echo" not in capsys.readouterr().out


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        operator.main(["add", "net", "ns", "--port", "80"])
    assert info.value.code == 2
    assert "expected [HOSTIP:]HOST:CONTAINER[/PROTO]" in capsys.readouterr().err


# --- formatting --------------------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    assert report.table([("A", "BB"), ("ccc", "d")], indent=2) == ["  A    BB", "  ccc  d"]


def test_format_status() -> None:
    st = NetworkStatus(
        name="cni-bridge", path="/etc/cni/net.d/10-cni-bridge.conflist", cni_version="1.1.0",
        bridge="br0", bridge_state="up", bridge_addresses=["172.18.0.1/16"],
        subnets=["172.18.0.0/16"], backend="nftables (in use)",
        forwarding={"net.ipv4.ip_forward": "on"}, ready="yes",
        attachments=[AttachmentState("c1", "eth0", ["172.18.0.2"], "/run/netns/x", "veth1",
                                     ["8080->80/tcp"], "present", ["store"])],
    )
    text = "\n".join(report.format_status(st))
    assert text.splitlines()[0] == (
        "network cni-bridge   /etc/cni/net.d/10-cni-bridge.conflist (cniVersion 1.1.0)")
    assert "  bridge       br0: up, 172.18.0.1/16" in text
    assert "  firewall     nftables (in use)" in text
    assert "  forwarding   net.ipv4.ip_forward on" in text
    lines = text.splitlines()
    header = next(ln for ln in lines if "CONTAINER" in ln)
    row = lines[lines.index(header) + 1]
    assert header.split() == ["CONTAINER", "IFNAME", "ADDRESSES", "HOST", "VETH", "PORTS",
                              "RULES"]
    assert row.split() == ["c1", "eth0", "172.18.0.2", "veth1", "8080->80/tcp", "present"]


def test_describe_removal() -> None:
    att = AttachmentState("c1", "eth0", ["10.0.0.2"], ports=["80->80/tcp"],
                          sources=["store", "cache", "record"])
    assert operator.describe_removal(att) == (
        "release 10.0.0.2; DEL through the plugins (cached ADD result); "
        "remove its firewall rules (80->80/tcp)")


# --- commands against fake plugins -------------------------------------------------------------


def test_add_check_del(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["add", "testnet", "ctr", "--id", "c1", "--port", "8080:80",
                          *dirs(env)]) == 0
    out = capsys.readouterr().out
    assert "added c1/eth0 to network testnet (netns /run/netns/ctr)" in out
    assert "address   10.9.0.2/24 gateway 10.9.0.1" in out
    assert "host      veth1234 on br9" in out
    assert "port      8080->80/tcp" in out
    assert "undo with cni-bridge del testnet ctr --id c1" in out
    portmap_add = [c for c in calls(env) if c["plugin"] == "portmap"][0]
    assert portmap_add["conf"]["runtimeConfig"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert operator.main(["check", "testnet", "ctr", "--id", "c1", *dirs(env)]) == 0
    assert "ok: c1/eth0 on network testnet matches its ADD result" in capsys.readouterr().out
    assert operator.main(["del", "testnet", "ctr", "--id", "c1", *dirs(env)]) == 0
    assert "deleted c1/eth0 from network testnet" in capsys.readouterr().out
    dels = [c for c in calls(env) if c["command"] == "DEL"]
    assert [c["plugin"] for c in dels] == ["portmap", "bridge"]
    assert dels[0]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080


def test_add_json_prints_the_result(env: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["add", "testnet", "ctr", "--json", *dirs(env)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ips"][0]["address"] == "10.9.0.2/24"


def test_add_accepts_a_conflist_path(env: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = env["conf"] / "10-test.conflist"
    assert operator.main(["add", str(path), "ctr", "--conf-dir", "/nonexistent",
                          "--cache-dir", str(env["cache"]), "--plugin-dir",
                          str(env["plugins"])]) == 0


def test_plugin_error_is_explained(env: dict[str, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    conf = env["conf"] / "10-test.conflist"
    doc = json.loads(conf.read_text())
    doc["plugins"][0]["failAdd"] = True
    conf.write_text(json.dumps(doc))
    assert operator.main(["add", "testnet", "ctr", *dirs(env)]) == 1
    err = capsys.readouterr().err
    assert "cni-bridge add: plugin bridge failed: [7] bad config (field x)" in err
    assert "the plugin log line" in err
    assert "next: fix the network configuration" in err


def test_unknown_network_lists_the_known_ones(env: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["add", "nope", "ctr", *dirs(env)]) == 1
    err = capsys.readouterr().err
    assert "no network named 'nope'" in err and "found: testnet" in err
    assert "--conf-dir" in err


def test_status_without_configuration_says_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["status", "--conf-dir", str(tmp_path)]) == 1
    assert "install --with-conf" in capsys.readouterr().err


def test_status_shows_attachments_from_store_and_cache(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    operator.main(["add", "testnet", "ctr", "--id", "c1", *dirs(env)])
    store = env["data"] / "testnet"
    store.mkdir(parents=True)
    (store / "10.9.0.2").write_bytes(b"c1\r\neth0")
    (store / "10.9.0.7").write_bytes(b"gone\r\neth0")
    (store / "lock").write_bytes(b"")
    capsys.readouterr()
    assert operator.main(["status", "--json", *dirs(env)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (net,) = doc["networks"]
    assert net["name"] == "testnet" and net["bridge"] == "br9" and net["ready"] == "yes"
    atts = {a["container_id"]: a for a in net["attachments"]}
    assert atts["c1"]["addresses"] == ["10.9.0.2"] and atts["c1"]["host_veth"] == "veth1234"
    assert atts["c1"]["sources"] == ["store", "cache"]
    assert atts["gone"]["sources"] == ["store"] and atts["gone"]["rules"] == "no record"
    assert operator.main(["status", "testnet", *dirs(env)]) == 0
    out = capsys.readouterr().out
    assert "network testnet" in out and "attachments  2" in out


def test_gc_needs_an_explicit_valid_list(env: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["gc", "testnet", *dirs(env)]) == 1
    assert "--valid ID/IFNAME" in capsys.readouterr().err
    assert calls(env) == []


def test_gc_dry_run_changes_nothing(env: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    operator.main(["add", "testnet", "ctr1", "--id", "keep", *dirs(env)])
    operator.main(["add", "testnet", "ctr2", "--id", "stale", *dirs(env)])
    store = env["data"] / "testnet"
    store.mkdir(parents=True)
    (store / "10.9.0.3").write_bytes(b"stale\r\neth0")
    before = sorted(p.name for p in env["tmp"].rglob("*"))
    n_calls = len(calls(env))
    capsys.readouterr()
    assert operator.main(["gc", "testnet", "--valid", "keep/eth0", "--dry-run", *dirs(env)]) == 0
    out = capsys.readouterr().out
    assert "(dry run: nothing is changed)" in out
    assert ("would remove stale/eth0: release 10.9.0.3; DEL through the plugins "
            "(cached ADD result)") in out
    assert "keep/eth0:" not in out
    assert sorted(p.name for p in env["tmp"].rglob("*")) == before
    assert len(calls(env)) == n_calls


def test_gc_runs_del_and_gc(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    operator.main(["add", "testnet", "ctr1", "--id", "keep", *dirs(env)])
    operator.main(["add", "testnet", "ctr2", "--id", "stale", *dirs(env)])
    n_calls = len(calls(env))
    assert operator.main(["gc", "testnet", "--valid", "keep/eth0", *dirs(env)]) == 0
    made = calls(env)[n_calls:]
    assert [(c["command"], c["plugin"], c["id"]) for c in made] == [
        ("DEL", "portmap", "stale"), ("DEL", "bridge", "stale"),
        ("GC", "bridge", ""), ("GC", "portmap", "")]
    assert made[-1]["conf"]["cni.dev/valid-attachments"] == [
        {"containerID": "keep", "ifname": "eth0"}]
    assert sorted(p.name for p in (env["cache"] / "results").iterdir()) == [
        "testnet-keep-eth0"]


def test_reconcile_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["reconcile"]) == 0
    assert "no attachment records" in capsys.readouterr().out


def test_install_from_source_without_bundle_says_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert operator.main(["install", "--bin-dir", str(tmp_path)]) == 1
    assert "build/build.sh" in capsys.readouterr().err


# --- the hidden echo helper --------------------------------------------------------------------


def test_echo_serve_and_probe_over_loopback() -> None:
    base = [sys.executable, "-m", "cni_bridge", "_echo"]
    root = str(Path(__file__).resolve().parents[2])
    server = subprocess.Popen([*base, "serve", "--port", "0", "--timeout", "5"],
                              stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        # Port 0 cannot be probed: find the port through /proc instead of guessing.
        port = _listening_port(server.pid)
        probe = subprocess.run([*base, "probe", "--to", "127.0.0.1", "--port", str(port)],
                               capture_output=True, text=True, cwd=root, timeout=10)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.splitlines()[0] == "local 127.0.0.1"
        assert probe.stdout.splitlines()[1].startswith("reply ")
        out, _ = server.communicate(timeout=5)
        assert "peer 127.0.0.1" in out
    finally:
        server.kill()
        server.wait()


def _listening_port(pid: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp6", "/proc/net/tcp"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "0A":  # LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
    raise AssertionError("the echo server's port was not found")


def test_echo_probe_failure_exits_1() -> None:
    root = str(Path(__file__).resolve().parents[2])
    probe = subprocess.run([sys.executable, "-m", "cni_bridge", "_echo", "probe", "--to",
                            "127.0.0.1", "--port", "1", "--timeout", "1"],
                           capture_output=True, text=True, cwd=root, timeout=10)
    assert probe.returncode == 1 and "probe failed" in probe.stderr



def test_commands_other_than_serve_do_not_import_the_server() -> None:
    # gc without --valid fails with a UserError: main()'s error path runs (it names ServeError)
    root = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from cni_bridge.admin import main as operator; code = operator.main(['gc', 'net']); "
            "print(code, sorted(m for m in sys.modules if m.startswith('cni_bridge.serve')))")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    assert proc.stdout.split(" ", 1)[0] == "1" and "--valid" in proc.stderr
    assert "cni_bridge.serve.server.main" not in proc.stdout
    assert "cni_bridge.serve.server.loop" not in proc.stdout
