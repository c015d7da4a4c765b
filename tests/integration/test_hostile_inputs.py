"""Hostile inputs through the real executables, in throwaway namespaces (USERS.md item 23).

Each call must give a clear error (exit 1, one ``{code, msg}`` object), write nothing and change
nothing: the temp tree holding the data dir, state dir and working directory is unchanged (so
nothing appeared next to the data dir either), H's links, addresses, routes and firewall are
unchanged, and the machine's default state locations are untouched.

Decisions documented here:
- CNI_NETNS may be a symlink: it is accepted when it resolves to a network namespace (runtimes
  hand out /proc/<pid>/ns/net and bind mounts alike; what counts is the namespace it opens).
- A NUL byte cannot reach a plugin through its environment (execve ends the string there), so
  NUL in container IDs, ifnames and netns paths is covered in-process (tests/fuzz); NUL inside
  the JSON config (``\\u0000``) is covered here.
- Container IDs and network names longer than 255 characters (a file name) are refused by the
  dispatcher (codes 4 and 7), like any other invalid ID.
- The plugin's own namespace, by any path, is refused with code 8 before anything is done, on
  ADD, CHECK and DEL alike (a DEL there would delete a host interface named like CNI_IFNAME).
- PID 1's namespace (the machine's own) is never configured. Tested without risk: the plugin
  runs in a new PID namespace whose PID 1 sits in a throwaway namespace "X".
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable

import pytest

from tests.integration.test_hostile_helpers import NETWORK, World, world
from tests.netns import PLUGIN_PATH, Netns

__all__ = ["world"]  # fixture

ROLES = ("bridge", "host-local", "portmap")
HOSTILE_NAMES = {
    "dotdot": "..",
    "dot": ".",
    "traversal": "../escape",
    "deep-traversal": "a/../../escape",
    "slash": "a/b",
    "absolute": "/tmp/escape",
    "nul": "a\x00b",
    "newline": "a\nb",
    "4KiB": "x" * 4096,
}
HOSTILE_IDS = {k: v for k, v in HOSTILE_NAMES.items() if k not in ("nul",)}  # env: no NUL


def expect_refused(world: World, role: str, env: dict[str, str | None], stdin: object,
                   codes: tuple[int, ...], why: str) -> dict[str, object]:
    before = world.snapshot()
    run = world.call(role, env, stdin, why)
    assert run.rc == 1, f"{why}: accepted\n{run.stdout[:1000]!r}"
    assert run.code in codes, f"{why}: code {run.code}, expected {codes}: {str(run.doc)[:1000]}"
    world.assert_unchanged(before, f"{role} {env.get('CNI_COMMAND')} with {why}")
    return run.doc  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ names and IDs

@pytest.mark.parametrize("role", ROLES)
def test_hostile_network_name(world: World, role: str) -> None:
    for label, name in HOSTILE_NAMES.items():
        for verb in ("ADD", "DEL", "CHECK"):
            doc = expect_refused(world, role, world.env(verb), world.conf(role, name=name), (7,),
                                 f"network name {label}")
            assert "network name" in str(doc["msg"])


@pytest.mark.parametrize("role", ROLES)
def test_hostile_container_id(world: World, role: str) -> None:
    for label, cid in HOSTILE_IDS.items():
        for verb in ("ADD", "DEL", "CHECK"):
            doc = expect_refused(world, role, world.env(verb, CNI_CONTAINERID=cid),
                                 world.conf(role), (4,), f"container ID {label}")
            assert "containerID" in str(doc["msg"])


@pytest.mark.parametrize("role", ROLES)
def test_hostile_args_and_paths_in_the_config(world: World, role: str) -> None:
    """NUL and traversal inside config strings: dataDir, resolvConf, bridge name."""
    cases: list[tuple[str, dict[str, object]]] = [
        ("bridge name traversal", {"bridge": "../br"}),
        ("bridge name with NUL", {"bridge": "br\x000"}),
        ("4 KiB bridge name", {"bridge": "b" * 4096}),
    ]
    if role == "portmap":
        cases = [("hostIP with NUL", {"runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4\x00"}]}}),
                 ("backend traversal", {"backend": "../nftables"})]
    elif role == "host-local":
        cases = [(why, {"ipam": ipam}) for why, ipam in bad_ipam(world).items()]
    for why, fields in cases:
        expect_refused(world, role, world.env("ADD"), world.conf(role, **fields), (7,), why)


# ------------------------------------------------------------------------------ ifnames

def test_ifname_of_15_bytes_works_and_16_fails(world: World,
                                               netns: Callable[[str], Netns]) -> None:
    container = netns("C")
    name15 = "e" * 14 + "1"
    env = world.env("ADD", CNI_NETNS=container.path, CNI_IFNAME=name15)
    add = world.call("bridge", env, world.conf())
    assert add.rc == 0, add.stdout
    assert [link["ifname"] for link in container.ip_json("link", "show", name15)] == [name15]
    conf = {**world.conf(), "prevResult": add.doc}
    assert world.call("bridge", {**env, "CNI_COMMAND": "CHECK"}, conf).rc == 0
    assert world.call("bridge", {**env, "CNI_COMMAND": "DEL"}, conf).rc == 0
    assert container.ip_json("link", "show", "type", "veth") == []
    for name in ("e" * 15 + "2", "é" * 8, "e" * 4096):  # 16 bytes (8 characters), 4 KiB
        for role in ROLES:
            for verb in ("ADD", "DEL"):
                doc = expect_refused(world, role, {**env, "CNI_COMMAND": verb,
                                                   "CNI_IFNAME": name}, world.conf(role), (4,),
                                     f"ifname of {len(name.encode())} bytes")
                assert "too long" in str(doc["msg"])


@pytest.mark.parametrize("ifname", [".", "..", "a/b", "a:b", "a b", "eth0\n", "../../x"])
def test_bad_ifname_refused(world: World, ifname: str) -> None:
    for role in ROLES:
        expect_refused(world, role, world.env("ADD", CNI_IFNAME=ifname), world.conf(role), (4,),
                       f"ifname {ifname!r}")


# ------------------------------------------------------------------------------ CNI_NETNS

def test_netns_regular_file_refused(world: World) -> None:
    path = world.root / "not-a-netns"
    path.write_text("")
    for verb in ("ADD", "CHECK"):
        conf = world.conf() if verb == "ADD" else {**world.conf(), "prevResult": {
            "cniVersion": "1.1.0", "ips": [{"address": "10.77.0.2/24"}]}}
        doc = expect_refused(world, "bridge", world.env(verb, CNI_NETNS=str(path)), conf,
                             (4, 8, 999), "CNI_NETNS that is a regular file")
        if verb == "ADD":  # CHECK may first find that IPAM holds nothing: also a clear error
            assert "not a network namespace" in json.dumps(doc)


def test_netns_directory_and_missing_refused(world: World) -> None:
    for path, why in ((str(world.root), "a directory"), ("/run/netns/cnit-no-such", "missing"),
                      ("relative/path", "a relative path"), ("/dev/null", "a device")):
        doc = expect_refused(world, "bridge", world.env("ADD", CNI_NETNS=path), world.conf(),
                             (3, 4, 5, 8, 999), f"CNI_NETNS {why}")
        assert path in json.dumps(doc)


def test_netns_symlink_to_a_netns_is_accepted(world: World,
                                              netns: Callable[[str], Netns]) -> None:
    """Decision: a symlink is followed; what counts is that it opens a network namespace."""
    container = netns("C")
    link = world.root / "cwd" / "netns-link"
    link.symlink_to(container.path)
    env = world.env("ADD", CNI_NETNS=str(link))
    add = world.call("bridge", env, world.conf())
    assert add.rc == 0, add.stdout
    assert container.ip_json("link", "show", "eth0") != []
    assert world.call("bridge", {**env, "CNI_COMMAND": "DEL"},
                      {**world.conf(), "prevResult": add.doc}).rc == 0
    assert container.ip_json("link", "show", "type", "veth") == []


def own_netns_paths(world: World) -> list[str]:
    """Paths naming the namespace the plugin runs in (H), including a symlink to it."""
    link = world.root / "cwd" / "own-link"
    link.symlink_to(world.ns.path)
    return ["/proc/self/ns/net", "/proc/thread-self/ns/net", world.ns.path, str(link)]


@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL"])
def test_own_netns_refused(world: World, verb: str) -> None:
    """The plugin's own namespace is never treated as a container's: code 8 on ADD and DEL (a
    DEL there would delete the host interface that has the container's ifname); CHECK may
    first find that IPAM holds nothing, also a refusal."""
    world.ns.run("ip", "link", "add", "victim0", "type", "veth", "peer", "name", "victim0p")
    conf = world.conf() if verb == "ADD" else {**world.conf(), "prevResult": {
        "cniVersion": "1.1.0", "ips": [{"address": "10.77.0.2/24"}]}}
    for path in own_netns_paths(world):
        env = world.env(verb, CNI_NETNS=path, CNI_IFNAME="victim0")
        codes = (8,) if verb != "CHECK" else (8, 999)
        doc = expect_refused(world, "bridge", env, conf, codes, f"own netns via {path}")
        assert doc["code"] != 8 or "own network namespace" in str(doc["msg"])
    assert world.ns.ip_json("link", "show", "victim0") != []


def test_pid1_netns_never_configured(world: World, netns: Callable[[str], Netns]) -> None:
    """/proc/1/ns/net as CNI_NETNS, with PID 1 in throwaway namespace X (new PID namespace).

    Never run against the machine's real PID 1: if the plugin did not refuse, it would configure
    the machine's own namespace. Here a failure only changes X."""
    x = netns("X")
    probe = subprocess.run(["ip", "netns", "exec", x.name, "unshare", "--pid", "--fork",
                            "--mount-proc", "stat", "-L", "/proc/1/ns/net"], capture_output=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace whose /proc/1/ns/net is readable: "
                    f"{probe.stderr.decode(errors='replace').strip()}")
    x.run("ip", "link", "add", "victim0", "type", "veth", "peer", "name", "victim0p")
    before_x = x.ip_json("link", "show")
    env = world.env("ADD", CNI_NETNS="/proc/1/ns/net", CNI_IFNAME="victim1")
    full = {"PATH": PLUGIN_PATH, "CNI_BRIDGE_STATE_DIR": str(world.state_dir), **env}
    plugin = " ".join(["env", "-i", *(shlex.quote(f"{k}={v}") for k, v in full.items()
                                      if v is not None), str(world.plugin_dir / "bridge")])
    # PID 1 of the new PID namespace is `sh` in X; the plugin runs in H under it.
    script = (f"ip netns exec {world.ns.name} {plugin} < {shlex.quote(str(world.root / 'in'))};"
              " echo \"rc=$?\"")
    (world.root / "in").write_text(json.dumps(world.conf()))
    before = world.snapshot()
    for verb in ("ADD", "DEL"):
        proc = subprocess.run(
            ["ip", "netns", "exec", x.name, "unshare", "--pid", "--fork", "--mount-proc",
             "sh", "-c", script.replace("CNI_COMMAND=ADD", f"CNI_COMMAND={verb}")],
            capture_output=True, text=True, timeout=60, check=False)
        assert "rc=1" in proc.stdout, f"{verb} on PID 1's namespace was accepted:\n{proc.stdout}"
        assert json.loads(proc.stdout.rsplit("rc=", 1)[0])["code"] == 8
    assert x.ip_json("link", "show") == before_x, "PID 1's namespace was changed"
    world.assert_unchanged(before, "a call with CNI_NETNS=/proc/1/ns/net")


# ------------------------------------------------------------------------------ IPAM config

def bad_ipam(world: World) -> dict[str, dict[str, object]]:
    """IPAM sections host-local must refuse before writing anything."""
    real, link = world.root / "real-store", world.root / "link-store"
    if not link.is_symlink():
        real.mkdir()
        link.symlink_to(real)
    ipam = world.conf()["ipam"]
    return {
        "dataDir with NUL": {**ipam, "dataDir": str(world.data_dir) + "\x00/x"},
        "symlinked dataDir": {**ipam, "dataDir": str(link)},
        "range with NUL": {**ipam, "ranges": [[{"subnet": "10.77.0.0/24\x00"}]]},
    }


def test_symlinked_data_dir_refused(world: World) -> None:
    conf = world.conf(ipam=bad_ipam(world)["symlinked dataDir"])
    doc = expect_refused(world, "host-local", world.env("ADD"), conf, (5, 7, 999),
                         "a symlinked dataDir")
    assert "symbolic link" in str(doc["msg"])
    assert list((world.root / "real-store").iterdir()) == []


@pytest.mark.parametrize("why", ["dataDir with NUL", "symlinked dataDir", "range with NUL"])
def test_bridge_refuses_bad_ipam_before_touching_links(world: World, why: str,
                                                       netns: Callable[[str], Netns]) -> None:
    """In-process host-local is asked first: a bad IPAM section fails before any link exists."""
    container = netns("C")
    conf = world.conf(ipam=bad_ipam(world)[why])
    expect_refused(world, "bridge", world.env("ADD", CNI_NETNS=container.path), conf,
                   (5, 7, 999), f"{why} (bridge)")
    assert container.ip_json("link", "show", "type", "veth") == []


def test_data_dir_network_symlink_refused(world: World) -> None:
    """A planted symlink at <dataDir>/<network> pointing outside is not followed."""
    outside = world.root / "outside"
    outside.mkdir()
    (world.data_dir / NETWORK).symlink_to(outside)
    doc = expect_refused(world, "host-local", world.env("ADD"), world.conf(), (5, 7, 999),
                         "a symlinked network directory")
    assert "symbolic link" in str(doc["msg"]) or "refusing" in str(doc["msg"])
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------------------ stdin

@pytest.mark.parametrize("role", ROLES)
def test_huge_stdin_refused(world: World, role: str) -> None:
    pad = "x" * (17 * 1024 * 1024)
    stdin = json.dumps({**world.conf(role), "pad": pad}).encode()
    doc = expect_refused(world, role, world.env("ADD"), stdin, (5,), "17 MiB of stdin")
    assert "larger than" in str(doc["msg"])


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("role", ROLES)
def test_deeply_nested_json_refused(world: World, role: str, kind: str) -> None:
    depth = 100_000
    if kind == "list":
        stdin = b"[" * depth + b"]" * depth
    else:  # nested inside an otherwise valid config
        conf = json.dumps(world.conf(role)).encode()
        stdin = conf[:-1] + b', "deep": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    doc = expect_refused(world, role, world.env("ADD"), stdin, (6,), f"{depth} levels of {kind}")
    assert len(json.dumps(doc)) < 2000, "the error message is not short"


@pytest.mark.parametrize("stdin", [b"\xff\xfe\x00", b'{"name":"\xff"}', b"\x00" * 100,
                                   b'{"cniVersion":"1.1.0","name":"n"}\x00garbage'],
                         ids=["binary", "bad-utf8", "nuls", "trailing"])
def test_undecodable_stdin_refused(world: World, stdin: bytes) -> None:
    for role in ROLES:
        expect_refused(world, role, world.env("ADD"), stdin, (6,), f"stdin {stdin[:20]!r}")


def test_environment_unchanged_by_refusals_in_bulk(world: World) -> None:
    """One snapshot around many refusals: nothing accumulates (lock files, temp files)."""
    before = world.snapshot()
    for role in ROLES:
        for verb in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
            run = world.call(role, world.env(verb, CNI_CONTAINERID="../x"),
                             world.conf(role, name="../x"))
            assert run.rc == 1
    world.assert_unchanged(before, "bulk refusals")
