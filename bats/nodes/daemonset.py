#!/usr/bin/env python3
"""Read conf/deploy/kubernetes/cni-bridge.yaml as a cluster would, and act out its containers on
a node simulated by a network namespace (the caller runs this inside it with ip netns exec).

    daemonset.py check MANIFEST SERVE_PATCH SERVE_DAEMONSET CONTAINERFILE CNI_BRIDGE
        The manifest's promises, read from the YAML: RBAC is exactly get/list/watch on nodes,
        bound to the DaemonSet's service account; hostNetwork, every taint tolerated,
        system-node-critical; the agent's options are ones `CNI_BRIDGE node-agent --help` lists,
        NODE_NAME comes from the downward API, its probe tests its --ready-file, its --conf-dir
        is the node's /etc/cni/net.d; the resident-server patch runs what SERVE_DAEMONSET runs;
        the image is tagged with CNI_BRIDGE's version and its commands run the bundle where
        CONTAINERFILE puts it. Prints one line per broken promise; exit 1 if any.
    daemonset.py run|probe MANIFEST CONTAINER [mapping options]
        run: exec the container's command (command + args, $(VAR) expanded, env from the
        manifest); probe: run its readinessProbe's command (again until it succeeds, for up
        to --wait seconds) and exit with its status.

A pod's view of paths becomes the test's: a volume mount's path goes to the directory given for
its hostPath (--host HOSTPATH=DIR; a hostPath without one is an error), the image's bundle
/opt/cni-bridge to --image DIR, any other absolute path into --root DIR (the container's own
file system). NODE_NAME is --node (the downward API's spec.nodeName); --env VAR=VALUE adds or
overrides a variable (the tests give a KUBECONFIG for the API double, which speaks plain HTTP,
instead of the pod's in-cluster service account); --drop-arg PREFIX removes the args starting
with PREFIX and --arg ARG appends one (as an operator editing the manifest would).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

IMAGE_BUNDLE = "/opt/cni-bridge"


def load(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec = pod_spec(docs)
    found: list[dict[str, Any]] = [c for c in spec.get("initContainers", []) + spec["containers"]
                                   if c["name"] == name]
    return found[0]


def options(argv: list[str]) -> dict[str, str]:
    """--name=value (or --name value) pairs of a command line; flags map to ""."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
            found[name] = value
    return found


def check_rbac(docs: list[dict[str, Any]], problems: list[str]) -> None:
    account, role = one(docs, "ServiceAccount"), one(docs, "ClusterRole")
    binding, spec = one(docs, "ClusterRoleBinding"), pod_spec(docs)
    rules = [{k: sorted(v) for k, v in rule.items()} for rule in role["rules"]]
    if rules != [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]:
        problems.append(f"ClusterRole grants more or less than get/list/watch nodes: {rules}")
    if binding["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": role["metadata"]["name"]}:
        problems.append(f"the binding refers to another role: {binding['roleRef']}")
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"],
               "namespace": account["metadata"]["namespace"]}
    if binding["subjects"] != [subject]:
        problems.append(f"the binding's subjects are not the service account: "
                        f"{binding['subjects']}")
    if spec.get("serviceAccountName") != subject["name"]:
        problems.append("the DaemonSet does not run as the bound service account")


def check_pod(docs: list[dict[str, Any]], problems: list[str]) -> None:
    spec = pod_spec(docs)
    if spec.get("hostNetwork") is not True:
        problems.append("not hostNetwork: routes and conflist would be the pod's own")
    if {"operator": "Exists"} not in spec.get("tolerations", []):
        problems.append("not every taint is tolerated (a NotReady node gets no network)")
    if spec.get("priorityClassName") != "system-node-critical":
        problems.append("priorityClassName is not system-node-critical")
    if any("configMap" in v for v in spec.get("volumes", [])):
        problems.append("a ConfigMap volume: pod CIDRs come from the API")


def check_agent(docs: list[dict[str, Any]], exe: str, problems: list[str]) -> None:
    agent, spec = container(docs, "agent"), pod_spec(docs)
    argv = agent["command"] + agent.get("args", [])
    if argv[1:2] != ["node-agent"]:
        problems.append(f"the agent container does not run node-agent: {argv}")
    known = set(re.findall(r"--[a-z][a-z0-9-]*", subprocess.run(
        [exe, "node-agent", "--help"], capture_output=True, text=True, check=True).stdout))
    opts = options(argv[2:])
    problems.extend(f"node-agent has no option {o}" for o in opts if o not in known)
    env = {e["name"]: e for e in agent.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom") != {"fieldRef": {"fieldPath": "spec.nodeName"}}:
        problems.append("NODE_NAME does not come from the downward API's spec.nodeName")
    if "NET_ADMIN" not in agent.get("securityContext", {}).get("capabilities", {}).get("add", []):
        problems.append("the agent lacks NET_ADMIN (routes)")
    probe = agent.get("readinessProbe", {}).get("exec", {}).get("command", [])
    if not opts.get("--ready-file") or probe[-1:] != [opts["--ready-file"]]:
        problems.append(f"the readiness probe {probe} does not test --ready-file "
                        f"{opts.get('--ready-file')}")
    mounts = {m["mountPath"]: m["name"] for m in agent.get("volumeMounts", [])}
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    if volumes.get(mounts.get(opts.get("--conf-dir", ""), "")) != "/etc/cni/net.d":
        problems.append(f"--conf-dir {opts.get('--conf-dir')} is not the node's /etc/cni/net.d")


def check_serve_patch(docs: list[dict[str, Any]], patch_path: str, serve_path: str,
                      problems: list[str]) -> None:
    patch = load(patch_path)[0]["spec"]["template"]["spec"]
    (serve,) = patch["containers"]
    (reference,) = pod_spec(load(serve_path))["containers"]
    if patch.get("hostPID") is not True:
        problems.append("the serve patch does not set hostPID")
    if container(docs, "agent")["image"] != serve["image"]:
        problems.append("the serve patch uses another image than the agent")
    for key in ("command", "securityContext", "readinessProbe", "livenessProbe"):
        if serve.get(key) != reference.get(key):
            problems.append(f"the serve patch's {key} differs from {serve_path}'s")


def check_image(docs: list[dict[str, Any]], containerfile: str, exe: str,
                problems: list[str]) -> None:
    """The image's tag is this build's version; the commands run the bundle where the
    Containerfile puts it."""
    version = subprocess.run([exe, "version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    copied = re.findall(r"^COPY dist/cni/ (\S+?)/?$", Path(containerfile).read_text(), re.M)
    if copied != [IMAGE_BUNDLE]:
        problems.append(f"the Containerfile copies the bundle to {copied}, not {IMAGE_BUNDLE}")
    for name in ("install", "agent"):
        spec = container(docs, name)
        if spec["image"].rpartition(":")[2] != version:
            problems.append(f"{name}'s image {spec['image']} is not version {version}")
        if spec["command"][0] != f"{IMAGE_BUNDLE}/cni-bridge":
            problems.append(f"{name} does not run the image's {IMAGE_BUNDLE}/cni-bridge")


def check(manifest: str, patch: str, serve: str, containerfile: str, exe: str) -> int:
    docs, problems = load(manifest), list[str]()
    check_rbac(docs, problems)
    check_pod(docs, problems)
    check_agent(docs, exe, problems)
    check_serve_patch(docs, patch, serve, problems)
    check_image(docs, containerfile, exe, problems)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


class PodView:
    """Paths as the container sees them -> paths of the simulated node (see the docstring)."""

    def __init__(self, docs: list[dict[str, Any]], name: str, opts: argparse.Namespace) -> None:
        volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in pod_spec(docs)["volumes"]}
        hosts = dict(m.split("=", 1) for m in opts.host)
        self.mounts: dict[str, str] = {IMAGE_BUNDLE: opts.image}
        for mount in container(docs, name).get("volumeMounts", []):
            host_path = volumes[mount["name"]]
            if host_path not in hosts:
                sys.exit(f"daemonset.py: give --host {host_path}=DIR (mounted at "
                         f"{mount['mountPath']} in {name})")
            self.mounts[mount["mountPath"]] = hosts[host_path]
        self.root: str = opts.root
        for standard in ("run", "tmp"):  # there in every image
            Path(self.root, standard).mkdir(parents=True, exist_ok=True)

    def path(self, text: str) -> str:
        if not text.startswith("/"):
            return text
        for inside in sorted(self.mounts, key=len, reverse=True):
            if text == inside or text.startswith(inside + "/"):
                return self.mounts[inside] + text[len(inside):]
        return self.root + text

    def arg(self, text: str) -> str:
        name, eq, value = text.partition("=")
        return f"{name}={self.path(value)}" if eq and name.startswith("--") else self.path(text)


def environment(spec: dict[str, Any], view: PodView, opts: argparse.Namespace) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = view.path(str(var["value"]))
        elif var["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}:
            env[var["name"]] = opts.node
        else:
            sys.exit(f"daemonset.py: cannot act out {var['name']}'s {var['valueFrom']}")
    env.update(kv.split("=", 1) for kv in opts.env)
    return env


def command_line(spec: dict[str, Any], env: dict[str, str], view: PodView,
                 opts: argparse.Namespace) -> list[str]:
    args = [a for a in spec.get("args", []) if not any(a.startswith(p) for p in opts.drop_arg)]
    argv = [*spec["command"], *args, *opts.arg]
    # Kubernetes expands $(VAR) in command and args from the container's environment
    expanded = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                       lambda m: env.get(m[1], m[0]), a) for a in argv]
    return [view.arg(a) for a in expanded]


def act(what: str, opts: argparse.Namespace) -> int:
    docs = load(opts.manifest)
    spec, view = container(docs, opts.container), PodView(docs, opts.container, opts)
    env = environment(spec, view, opts)
    if what == "probe":  # as the kubelet does, every 50 ms here, until success or --wait
        probe = [view.arg(a) for a in spec["readinessProbe"]["exec"]["command"]]
        deadline = time.monotonic() + opts.wait
        while (rc := subprocess.run(probe, env=env, check=False).returncode) != 0:
            if time.monotonic() > deadline:
                return rc
            time.sleep(0.05)
        return 0
    argv = command_line(spec, env, view, opts)
    print(f"daemonset.py: {opts.container}: {' '.join(argv)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, env)  # the caller's $! is the container's process


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return check(*argv[1:])
    p = argparse.ArgumentParser(prog="daemonset.py")
    p.add_argument("what", choices=["run", "probe"])
    p.add_argument("manifest")
    p.add_argument("container")
    p.add_argument("--node", default="node-1")
    p.add_argument("--host", action="append", default=[], metavar="HOSTPATH=DIR")
    p.add_argument("--image", required=True, metavar="DIR")
    p.add_argument("--root", required=True, metavar="DIR")
    p.add_argument("--env", action="append", default=[], metavar="VAR=VALUE")
    p.add_argument("--drop-arg", action="append", default=[], metavar="PREFIX")
    p.add_argument("--arg", action="append", default=[])
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="probe: probe again until it succeeds or this time has passed")
    opts = p.parse_args(argv)
    return act(opts.what, opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
