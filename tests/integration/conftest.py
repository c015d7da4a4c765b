"""Fixtures for the root integration tests: throwaway namespaces, a contract-checking runner.

Topology (TESTING.md 2.1): plugins run only in `host_ns` ("H"); containers get their own
namespaces from the `netns` factory; `outside_ns` ("O") is linked to H over 198.51.100.0/24 and
2001:db8:ff::/64 and has no default route, so nothing can leave the test world.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.netns import (
    Netns,
    PluginRun,
    create_netns,
    delete_netns,
    exec_plugin,
    plugin_env,
    sweep,
    veth_between,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
ROLES = ("bridge", "host-local", "portmap", "loopback", "cni-bridge")
REQUIRED_TOOLS = ("ip", "env")

H_UPLINK_V4, O_ETH0_V4 = "198.51.100.1", "198.51.100.2"
H_UPLINK_V6, O_ETH0_V6 = "2001:db8:ff::1", "2001:db8:ff::2"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only those under this directory.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _integration_guard() -> Iterator[None]:
    """Skip without root (or tools) locally; under CI=true that is a failure, not a skip."""
    problems = [] if os.geteuid() == 0 else ["integration tests need root"]
    problems += [f"missing tool: {t}" for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))
    yield
    sweep()  # anything a crashed fixture left behind, by this process's prefix only


@pytest.fixture
def netns() -> Iterator[Callable[[str], Netns]]:
    """Factory: `netns("C1")` creates a namespace that is deleted at teardown, even on failure."""
    made: list[Netns] = []

    def make(role: str) -> Netns:
        ns = create_netns(role)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        delete_netns(ns)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item so fixtures can tell at teardown whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


DIAGNOSTICS = (
    ("ip", "-d", "addr"),
    ("ip", "route"),
    ("ip", "-6", "route"),
    ("iptables-save",),
    ("ip6tables-save",),
    ("nft", "list", "ruleset"),
)


def dump_state(ns: Netns) -> str:
    """H's links, routes and firewall, for the report of a failed test."""
    parts = []
    for cmd in DIAGNOSTICS:
        if shutil.which(cmd[0]):
            proc = ns.run(*cmd, check=False)
            parts.append(f"### {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


@pytest.fixture
def host_ns(request: pytest.FixtureRequest, netns: Callable[[str], Netns]) -> Iterator[Netns]:
    """The "H" namespace, standing in for the node's root namespace; plugins run here.

    When the test fails, H's state is printed at teardown ("Captured stdout teardown").
    """
    host = netns("H")
    yield host
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- state of {host.name} after the failure ---\n{dump_state(host)}")


@pytest.fixture
def outside_ns(netns: Callable[[str], Netns], host_ns: Netns) -> Netns:
    """The "O" namespace: H uplink <-> O eth0, H's default routes via O, O has no default route."""
    outside = netns("O")
    veth_between(host_ns, "uplink", outside, "eth0")
    host_ns.run("ip", "addr", "add", f"{H_UPLINK_V4}/24", "dev", "uplink")
    host_ns.run("ip", "addr", "add", f"{H_UPLINK_V6}/64", "dev", "uplink", "nodad")
    outside.run("ip", "addr", "add", f"{O_ETH0_V4}/24", "dev", "eth0")
    outside.run("ip", "addr", "add", f"{O_ETH0_V6}/64", "dev", "eth0", "nodad")
    host_ns.run("ip", "route", "add", "default", "via", O_ETH0_V4)
    host_ns.run("ip", "-6", "route", "add", "default", "via", O_ETH0_V6)
    return outside


LAUNCHER = """#!{python}
# Test launcher: the role comes from basename(argv[0]), so this file's name matters.
import sys
sys.path.insert(0, {root!r})
from cni_bridge.entry import main
raise SystemExit(main())
"""


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding `bridge`, `host-local`, `portmap` executables.

    $CNI_BRIDGE_PLUGIN_DIR (the frozen build) when set, else launchers running the source tree.
    """
    frozen = os.environ.get("CNI_BRIDGE_PLUGIN_DIR")
    if frozen:
        return Path(frozen)
    path = tmp_path_factory.mktemp("plugins")
    for role in ROLES:
        script = path / role
        script.write_text(LAUNCHER.format(python=sys.executable, root=str(REPO_ROOT)))
        script.chmod(0o755)
    return path


class RunPlugin(Protocol):
    def __call__(
        self,
        ns: Netns,
        plugin: str,
        command: str | None,
        config: Any,
        *,
        container_id: str | None = "c1",
        netns: str | Netns | None = "",
        ifname: str | None = "eth0",
        cni_args: str | None = "",
        cni_path: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> PluginRun: ...


STATE_ENV = "CNI_BRIDGE_STATE_DIR"
SOCKET_ENV = "CNI_BRIDGE_SOCKET"


@pytest.fixture
def run_plugin(plugin_dir: Path) -> RunPlugin:
    """Run a plugin in `ns` under `env -i` with only CNI_* and PATH, enforcing the output contract.

    `plugin` is a name in plugin_dir, or a path (contains "/") such as /usr/lib/cni/bridge.
    A CNI_* variable whose value is None is omitted; `cni_path` None means plugin_dir (pass
    env={"CNI_PATH": None} to omit it). `env` adds or overrides variables.
    """

    def run(
        ns: Netns,
        plugin: str,
        command: str | None,
        config: Any,
        *,
        container_id: str | None = "c1",
        netns: str | Netns | None = "",
        ifname: str | None = "eth0",
        cni_args: str | None = "",
        cni_path: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> PluginRun:
        executable = plugin if "/" in plugin else str(plugin_dir / plugin)
        netns_path = netns.path if isinstance(netns, Netns) else netns
        variables = plugin_env(
            command, container_id, netns_path, ifname, cni_args, cni_path or str(plugin_dir)
        )
        if STATE_ENV in os.environ:  # keep the plugins' records out of the machine's /run
            variables[STATE_ENV] = os.environ[STATE_ENV]
        if SOCKET_ENV in os.environ:  # a test's private resident server
            variables[SOCKET_ENV] = os.environ[SOCKET_ENV]
        variables.update(env or {})
        return exec_plugin(ns, executable, config, variables)

    return run
