"""`cni-bridge node-agent` of the frozen build on a node (a throwaway namespace N) against the
Kubernetes API DOUBLE (tests/kube_api_double.py: no package here ships an API server, so the
double speaks the real list/watch wire protocol of the node endpoints).

N's underlay eth0 (192.0.2.10/24, 2001:db8:1::10/64) is a veth to U, which stands for the
rest of the cluster's network and runs the API double at 192.0.2.1:6443. Other nodes' InternalIPs
in 192.0.2.0/24 are on-link; 198.51.100.0/24 is not (a node behind a gateway).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_operator_install import bundle
from tests.netns import Netns, veth_between, wait_until
from tests.node_agent_harness import (
    ROUTE_PROTOCOL,
    AgentProcess,
    ApiDouble,
    agent_routes,
    kubeconfig,
    wait_routes,
)

__all__ = ["bundle"]
API = "192.0.2.1:6443"
TOKEN = "agent-token"
CONF_NAME = "10-cni-bridge.conflist"

ME = {"name": "node-a", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"],
      "internalIPs": ["192.0.2.10", "2001:db8:1::10"]}
B = {"name": "node-b", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
     "internalIPs": ["192.0.2.11", "2001:db8:1::11"]}
FAR = {"name": "node-far", "podCIDRs": ["10.244.9.0/24"], "internalIPs": ["198.51.100.9"]}
B_ROUTES = {"10.244.1.0/24": "192.0.2.11", "fd00:10:244:1::/64": "2001:db8:1::11"}


class Cluster:
    """N (the node), U (the network and the API double), and the agent's files."""

    def __init__(self, node: Netns, under: Netns, tmp: Path, bundle: Path) -> None:
        self.node, self.under, self.tmp, self.bundle = node, under, tmp, bundle
        self.conf_dir = tmp / "net.d"
        self.ready = tmp / "ready"
        self.kubeconfig = kubeconfig(tmp / "kubeconfig", f"http://{API}", TOKEN)
        self.api: ApiDouble | None = None
        self.agents: list[AgentProcess] = []

    def serve(self, nodes: list[dict[str, object]], *extra: str) -> ApiDouble:
        self.api = ApiDouble(self.under, self.tmp, API, nodes, "--token", TOKEN,
                             "--bookmark-interval", "1", *extra)
        return self.api

    def agent(self, *args: str, name: str = "node-a") -> AgentProcess:
        proc = AgentProcess(self.node, self.bundle, self.tmp, "--node-name", name,
                            "--kubeconfig", str(self.kubeconfig), "--conf-dir",
                            str(self.conf_dir), "--ready-file", str(self.ready), *args)
        self.agents.append(proc)
        return proc

    def once(self, *args: str, name: str = "node-a") -> subprocess.CompletedProcess[str]:
        return self.node.run(str(self.bundle / "cni-bridge"), "node-agent", "--once",
                             "--node-name", name, "--conf-dir", str(self.conf_dir), *args,
                             check=False, timeout=60)

    @property
    def conflist(self) -> Path:
        return self.conf_dir / CONF_NAME

    def wait_ready(self, agent: AgentProcess) -> None:
        agent.wait_log("conflist")
        wait_until(self.ready.exists, "the ready file", 10)


@pytest.fixture
def cluster(netns: Callable[[str], Netns], bundle: Path, tmp_path: Path) -> Iterator[Cluster]:
    node, under = netns("N"), netns("U")
    veth_between(node, "eth0", under, "eth0")
    node.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
    node.run("ip", "addr", "add", "2001:db8:1::10/64", "dev", "eth0", "nodad")
    under.run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
    c = Cluster(node, under, tmp_path, bundle)
    yield c
    for agent in c.agents:
        agent.stop()
    if c.api is not None:
        c.api.stop()


def test_conflist_written_once_routes_only_on_link(cluster: Cluster) -> None:
    cluster.serve([ME, B, FAR])
    agent = cluster.agent()
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)
    conf = json.loads(cluster.conflist.read_text())
    bridge = conf["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}],
                                        [{"subnet": "fd00:10:244::/64"}]]
    # derived: the smallest prefixes covering every node's pod CIDR
    assert bridge["nonMasqueradeCIDRs"] == ["10.244.0.0/20", "fd00:10:244::/63"]
    agent.wait_log("node node-far: InternalIP 198.51.100.9 is not on a directly connected "
                   "network of this node; 10.244.9.0/24 is left to the network's routing")
    routes = cluster.node.ip_json("route", "show", "10.244.1.0/24")
    assert routes[0]["protocol"] == str(ROUTE_PROTOCOL) and routes[0]["dev"] == "eth0"
    assert agent.stop() == 0
    assert not cluster.ready.exists()  # readiness ends with the agent
    assert agent_routes(cluster.node) == B_ROUTES  # ...the routes stay

    mtime = cluster.conflist.stat().st_mtime_ns
    again = cluster.agent()
    cluster.wait_ready(again)
    again.wait_log(f"conflist {cluster.conflist} unchanged")
    assert cluster.conflist.stat().st_mtime_ns == mtime  # not rewritten
    assert "route added" not in again.log  # nothing to do


def test_nodes_added_moved_and_removed(cluster: Cluster) -> None:
    api = cluster.serve([ME, B])
    agent = cluster.agent("--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56")
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)
    api.upsert("node-c", ["10.244.2.0/24"], ["192.0.2.12"])
    # how fast is for tests/perf/node_agent.py; here: it happens, well before a resync
    wait_routes(cluster.node, {**B_ROUTES, "10.244.2.0/24": "192.0.2.12"})
    api.upsert("node-c", ["10.244.2.0/24"], ["192.0.2.22"])
    wait_routes(cluster.node, {**B_ROUTES, "10.244.2.0/24": "192.0.2.22"})
    api.delete("node-b")
    wait_routes(cluster.node, {"10.244.2.0/24": "192.0.2.22"})
    agent.wait_log("route removed: 10.244.2.0/24 via 192.0.2.12")
    agent.wait_log("route added: 10.244.2.0/24 via 192.0.2.22 (node node-c)")
    # with --cluster-cidr the conflist never changes as nodes come and go
    assert agent.log.count("node-agent: conflist ") == 1


def test_routes_removed_by_hand_come_back_foreign_route_untouched(cluster: Cluster) -> None:
    cluster.node.run("ip", "route", "add", "10.244.3.0/24", "via", "192.0.2.99")
    cluster.serve([ME, B, {"name": "node-d", "podCIDRs": ["10.244.3.0/24"],
                           "internalIPs": ["192.0.2.13"]}])
    agent = cluster.agent("--resync-interval", "60")
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)
    agent.wait_log("route 10.244.3.0/24 via 192.0.2.13 (node node-d) not added: a route to "
                   "10.244.3.0/24 that is not ours (protocol 3) is there; it is left untouched")
    cluster.node.run("ip", "route", "del", "10.244.1.0/24")
    cluster.node.run("ip", "-6", "route", "del", "fd00:10:244:1::/64")
    # back on the deletion's notification: the periodic look is 60 s away
    wait_routes(cluster.node, B_ROUTES)
    foreign = cluster.node.ip_json("route", "show", "10.244.3.0/24")
    assert [(r["gateway"], r.get("protocol")) for r in foreign] == [("192.0.2.99", "boot")]


def test_routes_come_back_with_their_link(cluster: Cluster) -> None:
    """A link going down takes its IPv4 routes without a notification of their deletion (and
    its IPv6 addresses, keep_addr_on_down being 0); the link coming up is the signal."""
    cluster.serve([ME, B])
    agent = cluster.agent("--resync-interval", "60")
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)
    cluster.node.run("ip", "link", "set", "eth0", "down")
    cluster.node.run("ip", "link", "set", "eth0", "up")
    wait_routes(cluster.node, {"10.244.1.0/24": "192.0.2.11"})
    cluster.node.run("ip", "addr", "add", "2001:db8:1::10/64", "dev", "eth0", "nodad")
    wait_routes(cluster.node, B_ROUTES)


def test_api_stopped_and_restarted_keeps_everything_and_resumes(cluster: Cluster) -> None:
    api = cluster.serve([ME, B, {"name": "node-c", "podCIDRs": ["10.244.2.0/24"],
                                 "internalIPs": ["192.0.2.12"]}])
    agent = cluster.agent()
    cluster.wait_ready(agent)
    both = {**B_ROUTES, "10.244.2.0/24": "192.0.2.12"}
    wait_routes(cluster.node, both)
    api.ctl("POST", "/stop")
    api.delete("node-c")  # unseen while the API is away
    agent.wait_log("keeping the conflist and routes as they are, retrying with backoff")
    time.sleep(1.5)
    assert agent_routes(cluster.node) == both and cluster.ready.exists()
    api.ctl("POST", "/start")
    wait_routes(cluster.node, B_ROUTES, timeout=40)  # the backoff may be a few seconds by now
    agent.wait_log("API server reachable again")
    state = api.state()
    assert state["lists"] == 1, "the watch resumed from its resourceVersion, without a list"
    assert agent.log.count("unreachable") <= 1 and agent.proc.poll() is None


def test_expired_resource_version_lists_again(cluster: Cluster) -> None:
    api = cluster.serve([ME, B])
    agent = cluster.agent()
    cluster.wait_ready(agent)
    api.ctl("POST", "/stop")
    agent.wait_log("retrying with backoff")
    api.upsert("node-c", ["10.244.2.0/24"], ["192.0.2.12"])
    api.ctl("POST", "/expire")  # the agent's resourceVersion is now too old: 410 Expired
    api.ctl("POST", "/start")
    wait_routes(cluster.node, {**B_ROUTES, "10.244.2.0/24": "192.0.2.12"}, timeout=40)
    agent.wait_log("too old resource version")
    agent.wait_log("listing the nodes again")
    assert api.state()["lists"] == 2


def test_node_without_pod_cidrs_waits_and_writes_nothing(cluster: Cluster) -> None:
    api = cluster.serve([{**ME, "podCIDRs": []}, B])
    agent = cluster.agent()
    agent.wait_log("node node-a has no pod CIDR yet (spec.podCIDRs is empty")
    wait_routes(cluster.node, B_ROUTES)  # routes to the others do not wait for this node
    api.upsert("node-b", B["podCIDRs"], ["192.0.2.21", "2001:db8:1::21"])  # an event
    wait_routes(cluster.node, {"10.244.1.0/24": "192.0.2.21",
                               "fd00:10:244:1::/64": "2001:db8:1::21"})
    assert not cluster.conflist.exists() and not cluster.ready.exists()
    assert agent.log.count("has no pod CIDR yet") == 1  # said once
    api.upsert("node-a", ["10.244.0.0/24"], ["192.0.2.10"])
    cluster.wait_ready(agent)
    assert "10.244.0.0/24" in cluster.conflist.read_text()


def test_overlapping_pod_cidr_is_refused_naming_both_nodes(cluster: Cluster) -> None:
    api = cluster.serve([{**ME, "podCIDRs": ["10.244.1.0/25"]}, B])
    agent = cluster.agent()
    agent.wait_log("refusing this node's pod CIDR: pod CIDR 10.244.1.0/25 of node node-a "
                   "overlaps 10.244.1.0/24 of node node-b")
    agent.wait_log("node node-b not routed")
    assert not cluster.conflist.exists() and not cluster.ready.exists()
    assert agent_routes(cluster.node) == {}
    api.upsert("node-a", ["10.244.0.0/24"], ["192.0.2.10"])  # fixed: both go ahead
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)


def test_unreachable_api(cluster: Cluster) -> None:
    proc = cluster.once("--kubeconfig", str(cluster.kubeconfig))
    assert proc.returncode == 1
    assert proc.stderr.startswith("cni-bridge node-agent: cannot list nodes: API server "
                                  f"http://{API} unreachable: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    agent = cluster.agent()  # a running agent waits for the API
    agent.wait_log("unreachable")
    assert not cluster.ready.exists()
    cluster.serve([ME, B])
    cluster.wait_ready(agent)
    wait_routes(cluster.node, B_ROUTES)


def test_forbidden_token_names_verb_and_resource(cluster: Cluster) -> None:
    cluster.serve([ME, B], "--forbidden-token", "weak")
    weak = kubeconfig(cluster.tmp / "weak", f"http://{API}", "weak")
    proc = cluster.once("--kubeconfig", str(weak))
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        'cni-bridge node-agent: cannot list nodes: forbidden: nodes is forbidden: User '
        '"system:serviceaccount:kube-system:cni-bridge-node" cannot list resource "nodes"'), \
        proc.stderr
    wrong = kubeconfig(cluster.tmp / "wrong", f"http://{API}", "wrong")
    proc = cluster.once("--kubeconfig", str(wrong))
    assert proc.returncode == 1
    assert proc.stderr.startswith("cni-bridge node-agent: cannot list nodes: unauthorized: "
                                  "Unauthorized (the token or client certificate was not "
                                  "accepted)"), proc.stderr
    agent = AgentProcess(cluster.node, cluster.bundle, cluster.tmp, "--node-name", "node-a",
                         "--kubeconfig", str(weak), "--conf-dir", str(cluster.conf_dir))
    cluster.agents.append(agent)
    assert agent.proc.wait(30) == 1
    assert "cannot list nodes: forbidden" in agent.log and "Traceback" not in agent.log
    assert not cluster.conflist.exists() and agent_routes(cluster.node) == {}


def test_https_with_ca_and_in_cluster_service_account(cluster: Cluster) -> None:
    """TLS through the frozen build's ssl: the double behind a certificate for its address,
    the agent configured as in a pod (service account token and CA, KUBERNETES_SERVICE_*)."""
    cert, key = self_signed(cluster.tmp, "kube-apiserver", "IP:192.0.2.1")
    cluster.serve([ME, B], "--tls-cert", str(cert), "--tls-key", str(key))
    secrets = cluster.tmp / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(TOKEN)
    (secrets / "ca.crt").write_bytes(cert.read_bytes())
    # in-cluster paths are fixed: in a private mount namespace, a tmpfs on /run holds ours
    sa_dir = "/run/secrets/kubernetes.io/serviceaccount"
    script = (f"mount -n -t tmpfs tmpfs /run && mkdir -p {sa_dir} && cp {secrets}/* {sa_dir} "
              f"&& exec {cluster.bundle}/cni-bridge node-agent --once --node-name node-a "
              f"--conf-dir {cluster.conf_dir}")
    proc = cluster.node.run("env", "KUBERNETES_SERVICE_HOST=192.0.2.1",
                            "KUBERNETES_SERVICE_PORT=6443", "unshare", "-m", "--propagation",
                            "private", "sh", "-c", script, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert agent_routes(cluster.node) == B_ROUTES and cluster.conflist.exists()


def self_signed(tmp: Path, name: str, san: str = "") -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    extra = ["-addext", f"subjectAltName={san}"] if san else []
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", *extra, "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_client_certificate_from_kubeconfig_data(cluster: Cluster) -> None:
    """A kubeconfig as kubeadm writes admin.conf: CA, client certificate and key inline."""
    server_cert, server_key = self_signed(cluster.tmp, "kube-apiserver", "IP:192.0.2.1")
    client_cert, client_key = self_signed(cluster.tmp, "system:node:node-a")
    cluster.serve([ME, B], "--tls-cert", str(server_cert), "--tls-key", str(server_key),
                  "--client-ca", str(client_cert))

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = cluster.tmp / "admin.conf"
    config.write_text(
        "apiVersion: v1\nclusters:\n- cluster:\n"
        f"    certificate-authority-data: {data(server_cert)}\n"
        f"    server: https://{API}\n  name: kubernetes\ncontexts:\n- context:\n"
        "    cluster: kubernetes\n    user: node-a\n  name: node-a@kubernetes\n"
        "current-context: node-a@kubernetes\nkind: Config\npreferences: {}\nusers:\n"
        f"- name: node-a\n  user:\n    client-certificate-data: {data(client_cert)}\n"
        f"    client-key-data: {data(client_key)}\n")
    proc = cluster.once("--kubeconfig", str(config))
    assert proc.returncode == 0, proc.stderr
    assert agent_routes(cluster.node) == B_ROUTES
    stranger, _ = self_signed(cluster.tmp, "stranger", "IP:192.0.2.1")
    config.write_text(config.read_text().replace(data(server_cert), data(stranger)))
    proc = cluster.once("--kubeconfig", str(config))
    assert proc.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("cni-bridge node-agent: cannot list nodes: API server "
                                  f"https://{API} unreachable: ")


@pytest.mark.parametrize("args, message", [
    ([], "no node name: pass --node-name or set NODE_NAME"),
    (["--node-name", "a", "--kubeconfig", "/nonexistent"],
     "cannot read kubeconfig /nonexistent: No such file or directory"),
    (["--node-name", "a"], "no kubeconfig (--kubeconfig or KUBECONFIG) and not in a cluster"),
])
def test_bad_configuration_is_named(cluster: Cluster, args: list[str], message: str) -> None:
    proc = cluster.node.run("env", "-i", str(cluster.bundle / "cni-bridge"), "node-agent",
                            "--once", *args, check=False)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
