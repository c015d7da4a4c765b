"""Node state that lives and dies with its namespace (root, real namespaces, the real plugins).

A node namespace D gets a container with a published port, then goes away without DEL. The kernel
hands D's inode number to a later namespace; namespaces are made until one, N, has it (bounded).
In N, D's records and probe markers sit at N's own ``netns-<inode>/``. N must not take them for
its own: ``reconcile`` restores nothing, ``status`` reports the stale state and ``gc`` removes it,
ADD of the same host port succeeds (before this, it failed naming D's container), and a resident
server started in N heals nothing of D's after a firewall flush. Both firewall backends.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cni_bridge.node import owner as nodeowner
from cni_bridge.node import records
from tests.integration.conftest import SOCKET_ENV, STATE_ENV
from tests.integration.test_reliability_common import BACKENDS, World, make_world
from tests.integration.test_serve_common import Resident, resident, wait_for
from tests.netns import PLUGIN_PATH, PREFIX, Netns, delete_netns

__all__ = ["make_world", "resident"]

HOST_PORT = 20999
DEAD_SUBNET, SUBNET = "10.97.0.0/28", "10.98.0.0/28"  # D's containers, N's
DEAD_PREFIX, NEW_ADDRESS = "10.97.0.", "10.98.0.2"
REUSE_SECONDS, REUSE_TRIES = 20.0, 60  # to get a dead namespace's inode (a few tries do)
RELOADS = {"nftables": ("nft", "flush", "ruleset"), "iptables": ("iptables", "-t", "nat", "-F")}


def inode(ns: Netns) -> int:
    return os.stat(ns.path).st_ino


def dead_node_with_a_published_port(make_world: Callable[..., World],
                                    netns: Callable[[str], Netns], backend: str) -> int:
    """A node D with one container publishing HOST_PORT, deleted without DEL: its inode."""
    dead = make_world(backend, DEAD_SUBNET, host=netns("D"))
    dead.add(dead.rt("dead-ctr", netns("DC"), HOST_PORT))
    number = inode(dead.host)
    assert (state_dir(number) / "relnet").is_dir()  # D's records
    delete_netns(dead.host, keep_state=True)
    return number


def state_dir(ns: Netns | int) -> Path:
    number = ns if isinstance(ns, int) else inode(ns)
    return Path(os.environ[STATE_ENV]) / f"netns-{number}"


def lowest_free_inode() -> int:
    """The number the next namespace (of any kind) would get: the kernel hands out the lowest
    free one. Asked with a throwaway UTS namespace, freed again when the probe exits."""
    out = subprocess.run(["unshare", "--uts", "readlink", "/proc/self/ns/uts"], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().removeprefix("uts:[").removesuffix("]"))


@pytest.fixture
def reuse() -> Iterator[Callable[[int], Netns]]:
    """`reuse(number)`: a new network namespace with inode `number`, made once the kernel has
    freed it (its cleanup runs later, slower on a busy machine); lower free numbers are filled
    with namespaces kept until then."""
    made: list[Netns] = []

    def find(number: int) -> Netns:
        deadline = time.monotonic() + REUSE_SECONDS
        while time.monotonic() < deadline and len(made) < REUSE_TRIES:
            if lowest_free_inode() > number:
                time.sleep(0.1)  # not freed yet, or taken
                continue
            ns = Netns(f"{PREFIX}reuse{len(made)}")
            subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
            made.append(ns)
            if inode(ns) == number:
                for miss in made[:-1]:
                    delete_netns(miss)
                ns.run("ip", "link", "set", "lo", "up")
                return ns
        # Bounded: a busy machine may keep the number (another process took it, or the dead
        # namespace's cleanup is queued behind many). Then the dead namespace's directory is
        # put at a new namespace's inode: to the code under test, the very same situation.
        ns = Netns(f"{PREFIX}reuse{len(made)}")
        subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
        made.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        state_dir(number).rename(state_dir(ns))
        print(f"inode {number} not free again within {REUSE_SECONDS:g} s ({len(made)} "
              f"namespaces made): its directory moved to {ns.name}'s inode instead")
        return ns

    yield find
    for ns in made:
        delete_netns(ns)


def cli(ns: Netns, plugin_dir: Path, *args: str, check: bool = True) -> str:
    env = {"PATH": PLUGIN_PATH, STATE_ENV: os.environ[STATE_ENV],
           SOCKET_ENV: os.environ.get(SOCKET_ENV, "")}
    proc = ns.run(str(plugin_dir / "cni-bridge"), *args, env=env, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"cni-bridge {' '.join(args)}: rc={proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def conf_dir(world: World) -> str:
    path = world.tmp / "conf"
    path.mkdir(exist_ok=True)
    (path / "10-relnet.conflist").write_bytes(world.conf.raw)
    return str(path)


def owner_cookie(directory: Path) -> str:
    return (directory / records.OWNER_FILE).read_text().split("\n")[0]


def cookie_of(ns: Netns) -> str:
    """The namespace's cookie, as an owner file writes it (asked through a plugin-free path)."""
    code = ("import _socket,sys; s=_socket.socket(_socket.AF_UNIX,_socket.SOCK_DGRAM); "
            "print('netns-cookie', int.from_bytes(s.getsockopt(1,71,8),sys.byteorder))")
    return ns.run("python3", "-c", code).stdout.strip()


def firewall(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset").stdout + ns.run("iptables-save").stdout


def dead_container_rules(ns: Netns) -> list[str]:
    return [line for line in firewall(ns).splitlines()
            if DEAD_PREFIX in line or str(HOST_PORT) in line]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reused_inode_inherits_nothing(
        backend: str, make_world: Callable[..., World], netns: Callable[[str], Netns],
        reuse: Callable[[int], Netns], plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOCKET_ENV, "")  # standalone calls
    dead = dead_node_with_a_published_port(make_world, netns, backend)
    reused = reuse(dead)
    world = make_world(backend, SUBNET, host=reused)
    confs = conf_dir(world)
    stale = state_dir(reused)
    assert (stale / "relnet").is_dir() and list(stale.glob(f"{records.PROBE_PREFIX}*"))

    out = cli(reused, plugin_dir, "reconcile")
    assert "no attachment records" in out and "not this namespace's" in out, out
    assert dead_container_rules(reused) == []

    out = cli(reused, plugin_dir, "status", "--no-server", "--conf-dir", confs,
              "--cache-dir", str(world.tmp / "cache"), check=False)
    assert "stale state of 1 dead namespace" in out and str(stale) in out, out
    assert "dead-ctr" not in out  # not shown as an attachment of this node
    assert (stale / "relnet").is_dir(), "status changed nothing"

    out = cli(reused, plugin_dir, "gc")
    assert f"removed {stale}" in out, out
    assert not stale.exists() or not list(stale.glob(f"{records.PROBE_PREFIX}*"))
    assert "stale state" not in cli(reused, plugin_dir, "status", "--no-server", "--conf-dir",
                                    confs, "--cache-dir", str(world.tmp / "cache"), check=False)

    world.add(world.rt("new-ctr", netns("NC"), HOST_PORT))  # D's mapping would refuse it
    assert owner_cookie(stale) == cookie_of(reused)
    assert sorted(p.name for p in (stale / "relnet").iterdir()) == [
        "new-ctr.eth0.bridge.json", "new-ctr.eth0.portmap.json"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_writing_call_removes_a_dead_namespaces_state(
        backend: str, make_world: Callable[..., World], netns: Callable[[str], Netns],
        reuse: Callable[[int], Netns], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOCKET_ENV, "")
    dead = dead_node_with_a_published_port(make_world, netns, backend)
    reused = reuse(dead)
    world = make_world(backend, SUBNET, host=reused)
    world.add(world.rt("new-ctr", netns("NC"), HOST_PORT))
    directory = state_dir(reused)
    assert sorted(p.name for p in (directory / "relnet").iterdir()) == [
        "new-ctr.eth0.bridge.json", "new-ctr.eth0.portmap.json"]
    assert owner_cookie(directory) == cookie_of(reused)
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_in_a_reused_namespace_heals_nothing_foreign(
        backend: str, make_world: Callable[..., World], netns: Callable[[str], Netns],
        reuse: Callable[[int], Netns], resident: Callable[..., Resident]) -> None:
    dead = dead_node_with_a_published_port(make_world, netns, backend)
    reused = reuse(dead)
    server = resident(host=reused)
    directory = state_dir(reused)
    assert owner_cookie(directory) == cookie_of(reused)  # claimed at start
    assert not (directory / "relnet").exists()
    answer = server.status()
    assert answer is not None and answer["networks"] == {}
    assert f"netns-cookie {answer['netns_cookie']}" == cookie_of(reused)

    world = make_world(backend, SUBNET, host=reused)
    world.add(world.rt("new-ctr", netns("NC"), HOST_PORT))
    assert server.served() == {"ADD": 2}
    checks = (server.status() or {})["checks"]
    reused.run(*RELOADS[backend])
    wait_for(lambda: NEW_ADDRESS in firewall(reused), "the new container's rules restored", 30)
    wait_for(lambda: (server.status() or {}).get("checks", 0) > checks, "a health check", 30)
    assert [line for line in firewall(reused).splitlines() if DEAD_PREFIX in line] == []
    assert sorted(p.name for p in (directory / "relnet").iterdir()) == [
        "new-ctr.eth0.bridge.json", "new-ctr.eth0.portmap.json"]


def test_gc_leaves_what_it_cannot_prove_dead(netns: Callable[[str], Netns],
                                            plugin_dir: Path) -> None:
    """A directory of an inode no visible namespace has: its owner may be alive where this
    process cannot see it (a descriptor, another mount namespace), so it stays, and says so."""
    host = netns("H")
    base = Path(os.environ[STATE_ENV])
    orphan = base / "netns-1"  # no namespace ever has inode 1
    orphan.mkdir(parents=True)
    boot = Path(nodeowner.BOOT_ID_FILE).read_text().strip()
    (orphan / records.OWNER_FILE).write_text(nodeowner.owner_text(12345, boot))
    out = cli(host, plugin_dir, "gc")
    assert f"{orphan}: no namespace this process can see has its inode" in out, out
    assert orphan.is_dir()
    (orphan / records.OWNER_FILE).write_text(nodeowner.owner_text(12345, "an-earlier-boot"))
    out = cli(host, plugin_dir, "gc")
    assert f"removed {orphan}: its namespace is gone (written in an earlier boot)" in out, out
    assert not orphan.exists()


def test_a_served_call_binds_the_callers_namespace_not_the_servers(
        make_world: Callable[..., World], netns: Callable[[str], Netns], host_ns: Netns,
        resident: Callable[..., Resident]) -> None:
    """The worker enters the caller's namespace before it asks for the cookie."""
    server = resident(host=host_ns)
    caller = netns("N")
    world = make_world("nftables", SUBNET, host=caller)
    world.add(world.rt("ctr", netns("NC"), HOST_PORT))
    assert server.served() == {"ADD": 2}
    assert owner_cookie(state_dir(caller)) == cookie_of(caller) != cookie_of(host_ns)
    assert owner_cookie(state_dir(host_ns)) == cookie_of(host_ns)  # the server's, at start
