"""The default network: what `cni-bridge demo` wires and `conf/10-cni-bridge.conflist` documents
(a unit test keeps the two identical)."""

from __future__ import annotations

from typing import Any

# Where `cni-bridge add` caches ADD results (a libcni runtime keeps its own, same format).
DEFAULT_CACHE_DIR = "/var/lib/cni/cni-bridge-cache"
DEFAULT_CONFLIST: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "cni-bridge",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "br0",
            "isGateway": True,
            "isDefaultGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "172.18.0.0/16"}]],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ],
}
