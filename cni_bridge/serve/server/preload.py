"""Import, once in the server, everything a call may need; then every worker starts warm.

Only code is loaded: no netlink socket, no firewall context, no file of any namespace is opened
here (a worker opens those after entering its caller's namespaces).
"""

from __future__ import annotations

import importlib
import os

import cni_bridge

# Operator-only modules: never on a plugin call's path.
SKIPPED = frozenset({"cni_bridge.__main__", "cni_bridge.admin.demo", "cni_bridge.admin.demo_echo",
                     "cni_bridge.admin.demo_world", "cni_bridge.admin.main",
                     "cni_bridge.deploy.install"})


def package_modules() -> list[str]:
    """Source tree or frozen ``.pyc`` files alike."""
    base = cni_bridge.__path__[0]
    found = set()
    for directory, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(directory, base)
        package = "cni_bridge" if rel == "." else "cni_bridge." + rel.replace(os.sep, ".")
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext in (".py", ".pyc"):
                found.add(package if stem == "__init__" else f"{package}.{stem}")
    return sorted(found - SKIPPED)


def preload() -> int:
    """Import the package and the netlink message classes; returns the modules imported."""
    names = package_modules()
    for name in names:
        importlib.import_module(name)
    from cni_bridge.net._codec import codec

    codec()  # pyroute2's message classes (code only)
    import ctypes  # noqa: F401  (setns before Python 3.12)

    return len(names)
