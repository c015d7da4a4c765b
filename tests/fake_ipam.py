#!/usr/bin/env python3
"""A fake IPAM plugin for tests: prints a canned result and records every call (stdlib only).

Installed under any name with `install(directory, name)`; the bridge then executes it from
CNI_PATH when `ipam.type` is that name. It reads its settings from the network config's `ipam`:

    "result": the ADD result to print (its cniVersion is set to the request's);
    "log":    a file; one JSON line per call is appended:
              {"command", "containerId", "ifname", "netns", "args", "prevResult": bool}
    "fail":   commands that fail with code 11 ("try again later"), e.g. ["DEL"].

VERSION answers for 0.3.0 to 1.1.0; DEL, CHECK, GC and STATUS print nothing and succeed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def install(directory: Path, name: str) -> Path:
    """Make `directory/name` run this file with the current interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} "$@"\n')
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict[str, Any]]:
    """What the fake recorded, oldest first."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    config = json.loads(sys.stdin.read() or "{}")
    version = config.get("cniVersion", "1.0.0")
    if command == "VERSION":
        print(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED}))
        return 0
    ipam = config.get("ipam", {})
    if ipam.get("log"):
        record = {"command": command, "containerId": os.environ.get("CNI_CONTAINERID", ""),
                  "ifname": os.environ.get("CNI_IFNAME", ""),
                  "netns": os.environ.get("CNI_NETNS", ""),
                  "args": os.environ.get("CNI_ARGS", ""), "prevResult": "prevResult" in config}
        with open(ipam["log"], "a") as log:
            log.write(json.dumps(record) + "\n")
    if command in ipam.get("fail", []):
        print(json.dumps({"cniVersion": version, "code": 11,
                          "msg": f"fake IPAM told to fail {command}"}))
        return 1
    if command == "ADD":
        print(json.dumps({**ipam.get("result", {}), "cniVersion": version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
