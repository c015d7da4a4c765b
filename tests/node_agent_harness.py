"""Running `cni-bridge node-agent` against the Kubernetes API double (tests/kube_api_double.py)
in throwaway namespaces: shared by the integration tests and the 100-node measurement.

`ApiDouble` runs the double in a namespace and drives it through its control socket;
`AgentProcess` runs the frozen agent in the node's namespace with its log in a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.kube_api_double import control
from tests.netns import Netns, wait_until

DOUBLE = Path(__file__).resolve().parent / "kube_api_double.py"
ROUTE_PROTOCOL = 147  # cni_bridge.node_agent.route_plan.ROUTE_PROTOCOL, spelled as ip shows it


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kubeconfig(path: Path, server: str, token: str | None = None, ca: Path | None = None) -> Path:
    """A kubeconfig in YAML as kubeadm writes them."""
    cluster = f"    server: {server}\n"
    if ca is not None:
        cluster += f"    certificate-authority: {ca}\n"
    user = f"  user:\n    token: {token}\n" if token else "  user: {}\n"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n" + cluster + "  name: test\n"
        "contexts:\n- context:\n    cluster: test\n    user: agent\n  name: test\n"
        "current-context: test\nusers:\n- name: agent\n" + user)
    return path


class ApiDouble:
    """The double serving `nodes` on `listen` inside `ns`."""

    def __init__(self, ns: Netns, workdir: Path, listen: str, nodes: list[dict[str, Any]],
                 *extra: str) -> None:
        self.ns = ns
        self.listen = listen
        self.control_path = str(workdir / "api-control.sock")
        nodes_file = workdir / "nodes.json"
        nodes_file.write_text(json.dumps(nodes))
        ns.assert_not_root()
        self.log = open(workdir / "api-double.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, str(DOUBLE), "--listen", listen,
             "--control", self.control_path, "--nodes", str(nodes_file), *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._up, "the API double's control socket", 10)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the API double exited with {self.proc.returncode}")
        try:
            self.ctl("GET", "/state")
        except OSError:
            return False
        return True

    @property
    def server(self) -> str:
        return f"http://{self.listen}"

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = control(self.control_path, method, path, body)
        if status >= 300:
            raise RuntimeError(f"API double {method} {path}: {status} {answer}")
        return answer

    def upsert(self, name: str, cidrs: list[str], ips: list[str]) -> int:
        return int(self.ctl("POST", "/nodes", {"name": name, "podCIDRs": cidrs,
                                               "internalIPs": ips})["resourceVersion"])

    def delete(self, name: str) -> None:
        self.ctl("DELETE", f"/nodes/{name}")

    def state(self) -> dict[str, Any]:
        return dict(self.ctl("GET", "/state"))

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()


class AgentProcess:
    """`cni-bridge node-agent` of the frozen build, running in `ns`."""

    def __init__(self, ns: Netns, bundle: Path, workdir: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.ns = ns
        self.log_path = workdir / f"agent-{time.monotonic_ns()}.log"
        ns.assert_not_root()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, str(bundle / "cni-bridge"), "node-agent", *args],
                stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})})

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.log:
                raise AssertionError(f"agent exited ({self.proc.returncode}) without "
                                     f"logging {text!r}:\n{self.log}")
            return text in self.log
        try:
            wait_until(seen, f"agent log line {text!r}", timeout)
        except TimeoutError:
            raise AssertionError(f"no {text!r} in the agent's log:\n{self.log}") from None

    def stop(self) -> int:
        terminate(self.proc)
        return self.proc.returncode


def agent_routes(ns: Netns) -> dict[str, str]:
    """Destination -> gateway of every route of ours (both families) in `ns`."""
    found = {}
    for family in ("-4", "-6"):
        for r in ns.ip_json(family, "route", "show", "proto", str(ROUTE_PROTOCOL)):
            found[r["dst"]] = r.get("gateway", "")
    return found


def wait_routes(ns: Netns, expected: dict[str, str], timeout: float = 5.0) -> float:
    """Wait until our routes in `ns` are exactly `expected`; returns the seconds it took."""
    start = time.monotonic()
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: agent_routes(ns) == expected, "the agent's routes", timeout)
    got = agent_routes(ns)
    assert got == expected, f"routes of ours: {got}, expected {expected}"
    return time.monotonic() - start
