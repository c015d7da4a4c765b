"""Throwaway network namespaces for the test suites, and helpers that run things inside them.

Every namespace made here is named ``cnit<pid>-<counter>-<role>`` so that a sweep removes only what
this test process created: other software (container runtimes) keeps its own entries in /run/netns.
Nothing here ever runs a command in the machine's own network namespace: ``Netns.run`` refuses to
when the target has the same inode as PID 1's (or the test process's own) namespace.

The pytest process itself never changes namespace (Python 3.11 has no ``os.setns``); all work goes
through ``ip netns exec`` child processes, which also remount /sys for the target namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETNS_DIR = "/run/netns"
PREFIX = f"cnit{os.getpid()}-"
CONNECTIVITY_SCRIPT = Path(__file__).with_name("connectivity.py")
# PATH given to plugins run under `env -i`: enough for iptables, nft, ip.
PLUGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLUGIN_TIMEOUT = 30.0

_counter = itertools.count(1)


class NetnsCommandError(subprocess.CalledProcessError):
    """A command inside a namespace failed; unlike the base class, the message shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


def _forbidden_netns_ids() -> set[tuple[int, int]]:
    """PID 1's namespace (when readable) and the test process's own: never run plugins there."""
    ids = set()
    for path in ("/proc/1/ns/net", "/proc/self/ns/net"):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            ids.add((st.st_dev, st.st_ino))
    return ids


@dataclass
class Netns:
    """A named network namespace under /run/netns."""

    name: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"{NETNS_DIR}/{self.name}"

    def assert_not_root(self) -> None:
        """Guard rail: never run anything in the machine's own namespace."""
        st = os.stat(self.path)
        if (st.st_dev, st.st_ino) in _forbidden_netns_ids():
            raise RuntimeError(f"netns {self.name} is the machine's own namespace; refusing")

    def run(
        self,
        *cmd: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside this namespace; `env`, when given, is its whole environment."""
        self.assert_not_root()
        argv = ["ip", "netns", "exec", self.name, *cmd]
        proc = subprocess.run(
            argv,
            input=input if input is not None else "",
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NetnsCommandError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def ip_json(self, *args: str) -> Any:
        """`ip -j -d <args>` inside the namespace, parsed (an empty answer is [])."""
        out = self.run("ip", "-j", "-d", *args).stdout.strip()
        return json.loads(out) if out else []

    def sysctl(self, key: str) -> str:
        """Read a sysctl as this namespace sees it; `key` in dotted or slash form."""
        rel = key if "/" in key else key.replace(".", "/")
        return self.run("cat", f"/proc/sys/{rel}").stdout.strip()

    def write_sysctl(self, key: str, value: str) -> None:
        rel = key if "/" in key else key.replace(".", "/")
        self.run("sh", "-c", 'echo "$1" > "$2"', "sh", value, f"/proc/sys/{rel}")


def create_netns(role: str) -> Netns:
    """Create `cnit<pid>-<n>-<role>` with `lo` up."""
    ns = Netns(f"{PREFIX}{next(_counter)}-{role}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True, text=True)
    try:
        ns.run("ip", "link", "set", "lo", "up")
    except BaseException:
        delete_netns(ns)
        raise
    return ns


def delete_netns(ns: Netns, keep_state: bool = False) -> None:
    """Remove `ns`, tolerating anything already gone.

    Veths go first (deleting the namespace leaves the peer's removal to the kernel's async cleanup,
    which makes a quick re-creation of the same names fail with EEXIST), then any processes left
    inside it (servers a failed test did not stop), then the plugins' state directory of it
    (unless `keep_state`: a test of what a dead namespace leaves), then the name.
    """
    if not os.path.exists(ns.path):
        return
    if not keep_state:
        remove_state_dir(os.stat(ns.path).st_ino)
    with contextlib.suppress(Exception):
        for link in ns.ip_json("link", "show", "type", "veth"):
            ns.run("ip", "link", "del", link["ifname"], check=False)
    with contextlib.suppress(Exception):
        pids = subprocess.run(
            ["ip", "netns", "pids", ns.name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


def remove_state_dir(inode: int) -> None:
    """The plugins' records and markers of a namespace the test made and is about to delete:
    records of a namespace removed without DEL would otherwise stay, and a later namespace
    given the same inode number would have to tell them apart. The namespace is alive here, so
    no other live namespace has its inode: the directory is its own or a dead one's."""
    import shutil

    from cni_bridge.node.owner import DEFAULT_ROOT, state_base

    for root in {DEFAULT_ROOT, state_base()}:  # the default and this run's (CNI_BRIDGE_STATE_DIR)
        shutil.rmtree(os.path.join(root, f"netns-{inode}"), ignore_errors=True)


def sweep() -> None:
    """Delete every namespace this process created that is still around."""
    if not os.path.isdir(NETNS_DIR):
        return
    for name in sorted(os.listdir(NETNS_DIR)):
        if name.startswith(PREFIX):
            delete_netns(Netns(name))


def veth_between(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with `a_if` in `a` and `b_if` in `b`, both up."""
    a.run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.run("ip", "link", "set", a_if, "up")
    b.run("ip", "link", "set", b_if, "up")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `predicate` until true; never a bare sleep for async kernel work."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_ipv6_settled(ns: Netns, timeout: float = 5.0) -> None:
    """Wait until no address in `ns` is still tentative (DAD running)."""
    wait_until(
        lambda: ns.ip_json("-6", "addr", "show", "tentative") == [],
        f"IPv6 DAD to finish in {ns.name}",
        timeout,
    )


# --- running a plugin --------------------------------------------------------------------------


@dataclass(frozen=True)
class PluginRun:
    rc: int
    stdout: str
    stderr: str
    json: Any  # the parsed stdout, or None when stdout was empty


class ContractViolation(AssertionError):
    """The plugin's stdout broke the CNI output contract."""


def check_output_contract(rc: int, stdout: str, stderr: str, what: str) -> Any:
    """Exit 0: stdout empty or one JSON document. Non-zero: one {code:int, msg:str} object."""

    def violation(why: str) -> ContractViolation:
        return ContractViolation(
            f"{what}: {why} (rc={rc})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )

    if rc == 0 and not stdout.strip():
        return None
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise violation(f"stdout is not exactly one JSON document: {exc}") from None
    if rc != 0:
        if not isinstance(doc, dict):
            raise violation("error output is not a JSON object")
        code = doc.get("code")
        # bool is an int subclass in Python but not a JSON number.
        if not isinstance(code, int) or isinstance(code, bool):
            raise violation("error object has no integer 'code'")
        if not isinstance(doc.get("msg"), str):
            raise violation("error object has no string 'msg'")
    return doc


def plugin_env(
    command: str | None,
    container_id: str | None,
    netns: str | None,
    ifname: str | None,
    cni_args: str | None,
    cni_path: str | None,
) -> dict[str, str | None]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": cni_path,
    }


def exec_plugin(
    ns: Netns,
    executable: str,
    config: Any,
    env: Mapping[str, str | None],
) -> PluginRun:
    """Run `executable` in `ns` under `env -i` with `env` (None values omitted) and PATH.

    `config` is a dict/list (sent as JSON) or str/bytes (sent as is). The output contract is
    enforced: a violation raises ContractViolation, which pytest reports as a failure.
    """
    if isinstance(config, bytes):
        stdin = config.decode()
    elif isinstance(config, str):
        stdin = config
    else:
        stdin = json.dumps(config)
    full = {"PATH": PLUGIN_PATH, **env}
    assignments = [f"{k}={v}" for k, v in full.items() if v is not None]
    proc = ns.run(
        "env", "-i", *assignments, executable, input=stdin, check=False, timeout=PLUGIN_TIMEOUT
    )
    what = f"{executable} {env.get('CNI_COMMAND')} in {ns.name}"
    doc = check_output_contract(proc.returncode, proc.stdout, proc.stderr, what)
    return PluginRun(proc.returncode, proc.stdout, proc.stderr, doc)


# --- connectivity ------------------------------------------------------------------------------


@dataclass
class EchoServer:
    """A `connectivity.py serve` running in a namespace; `peer` is set when the context exits."""

    ns: Netns
    proc: subprocess.Popen[bytes]
    out_path: Path
    peer: str | None = None

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout: float = 5.0) -> str | None:
        """Wait for the server to finish its one exchange; returns the peer it saw (or None)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        for line in self.output().splitlines():
            if line.startswith("peer "):
                self.peer = line.split(" ", 1)[1].strip()
        return self.peer


@contextlib.contextmanager
def echo_server(
    ns: Netns,
    proto: str,
    port: int,
    bind: str | None = None,
    reply: str = "pong",
    ready_timeout: float = 5.0,
) -> Iterator[EchoServer]:
    """Start a one-shot echo server in `ns`; on exit, wait briefly, record its peer, kill it."""
    ns.assert_not_root()
    workdir = Path(tempfile.mkdtemp(prefix="cnit-echo-"))
    out_path = workdir / "out"
    argv = [sys.executable, str(CONNECTIVITY_SCRIPT), "serve", "--proto", proto]
    argv += ["--port", str(port), "--reply", reply, *(["--bind", bind] if bind else [])]
    with open(out_path, "wb") as out:
        # stdin and every inherited fd closed, output to a file: nothing can hold the run open.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )
    server = EchoServer(ns, proc, out_path)
    try:
        _wait_ready(server, ready_timeout)
        yield server
        server.wait(timeout=3.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        server.wait(timeout=0)


def _wait_ready(server: EchoServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.startswith("ready") for line in server.output().splitlines()):
            return
        if server.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"echo server in {server.ns.name} not ready:\n{server.output()}")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    local: str | None  # the probe's own source address
    reply: str | None  # the server's reply text
    output: str


def probe(ns: Netns, proto: str, to: str, port: int, timeout: float = 3.0) -> ProbeResult:
    """Run `connectivity.py probe` in `ns` against to:port."""
    argv = [sys.executable, str(CONNECTIVITY_SCRIPT), "probe", "--proto", proto]
    argv += ["--to", to, "--port", str(port), "--timeout", str(timeout)]
    proc = ns.run(*argv, check=False, timeout=timeout + 10)
    lines = proc.stdout.splitlines()
    local = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("local ")), None)
    reply = lines[1] if len(lines) > 1 else None
    return ProbeResult(proc.returncode == 0, local, reply, proc.stdout + proc.stderr)
