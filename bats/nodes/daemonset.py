#!/usr/bin/env python3
"""Run the install step of conf/deploy/kubernetes/cni-bridge-install.yaml as its init container
would, on a node simulated by a network namespace (the caller runs this inside it).

    daemonset.py MANIFEST NODE_NAME CIDR_DIR VAR=VALUE...

The init container's shell script and its plain `env` values come from the manifest; the
ConfigMap's data becomes one file per key in CIDR_DIR (as a ConfigMap volume does); NODE_NAME
stands for the downward API; each VAR=VALUE overrides a value (the paths that a pod would see
through its volume mounts). Exits with the script's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def main(argv: list[str]) -> int:
    manifest, node, cidr_dir, *overrides = argv
    docs = list(yaml.safe_load_all(Path(manifest).read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    (init,) = daemonset["spec"]["template"]["spec"]["initContainers"]
    Path(cidr_dir).mkdir(parents=True, exist_ok=True)
    for key, value in (config_map.get("data") or {}).items():
        (Path(cidr_dir) / key).write_text(str(value))
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "NODE_NAME": node}
    env.update({e["name"]: str(e["value"]) for e in init.get("env", []) if "value" in e})
    env["POD_CIDR_DIR"] = cidr_dir
    env.update(kv.split("=", 1) for kv in overrides)
    return subprocess.run([*init["command"], *init["args"]], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
