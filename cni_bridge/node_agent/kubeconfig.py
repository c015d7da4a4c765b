"""Where the API server is and how to authenticate: a kubeconfig, or the pod's in-cluster
service account. Read once into `ClusterAccess`; files named in a kubeconfig are relative to it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni_bridge.node_agent import miniyaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The API access cannot be configured; the message names the file and field."""


@dataclass(frozen=True)
class ClusterAccess:
    server: str  # https://host:port or http://host:port (tests)
    token: str | None = None
    token_file: Path | None = None  # read at each connection: service account tokens rotate
    ca_data: bytes | None = None
    ca_file: Path | None = None
    cert_data: bytes | None = None
    cert_file: Path | None = None
    key_data: bytes | None = None
    key_file: Path | None = None
    insecure: bool = False

    def bearer(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the token file {self.token_file}: "
                                  f"{exc.strerror}") from None
        return self.token


def in_cluster(environ: Mapping[str, str], root: Path = SERVICE_ACCOUNT_DIR) -> ClusterAccess:
    """The pod's service account, as client-go's InClusterConfig reads it."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("no kubeconfig (--kubeconfig or KUBECONFIG) and not in a cluster "
                          "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)")
    if ":" in host:
        host = f"[{host}]"
    token = root / "token"
    if not token.exists():
        raise ConfigError(f"in-cluster: the service account token {token} is missing (is "
                          "automountServiceAccountToken off?)")
    ca = root / "ca.crt"
    return ClusterAccess(f"https://{host}:{port}", token_file=token,
                         ca_file=ca if ca.exists() else None)


def _data(entry: Mapping[str, Any], key: str, where: str) -> bytes | None:
    text = entry.get(f"{key}-data")
    if text is None:
        return None
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ConfigError(f"{where}: {key}-data is not base64") from None


def _file(entry: Mapping[str, Any], key: str, base: Path) -> Path | None:
    text = entry.get(key)
    return None if not text else base / Path(str(text)).expanduser()


def _named(doc: Mapping[str, Any], section: str, name: str, path: Path) -> Mapping[str, Any]:
    inner = section[:-1]  # clusters -> cluster, users -> user, contexts -> context
    for item in doc.get(section) or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get(inner) or {}
            if isinstance(value, Mapping):
                return value
    raise ConfigError(f"{path}: no {inner} named {name!r} in {section}")


def load_kubeconfig(path: Path, context: str | None = None) -> ClusterAccess:
    """The cluster and user of `context` (default: current-context) of the kubeconfig."""
    try:
        doc = miniyaml.load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except miniyaml.YamlError as exc:
        raise ConfigError(f"kubeconfig {path}: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"kubeconfig {path}: not a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path}: no current-context: set one (kubectl config "
                          "use-context NAME)")
    ctx = _named(doc, "contexts", str(name), path)
    cluster = _named(doc, "clusters", str(ctx.get("cluster", "")), path)
    user = _named(doc, "users", str(ctx.get("user", "")), path) if ctx.get("user") else {}
    for unsupported in ("exec", "auth-provider", "username"):
        if unsupported in user:
            raise ConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} authenticates with "
                              f"{unsupported!r}, which the node agent does not support (use a "
                              "token or a client certificate)")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"kubeconfig {path}: cluster server {server!r} is not an http(s) URL")
    base, where = path.parent, f"kubeconfig {path}"
    return ClusterAccess(
        server=server.rstrip("/"),
        token=str(user["token"]) if user.get("token") else None,
        token_file=_file(user, "tokenFile", base),
        ca_data=_data(cluster, "certificate-authority", where),
        ca_file=_file(cluster, "certificate-authority", base),
        cert_data=_data(user, "client-certificate", where),
        cert_file=_file(user, "client-certificate", base),
        key_data=_data(user, "client-key", where),
        key_file=_file(user, "client-key", base),
        insecure=cluster.get("insecure-skip-tls-verify") in (True, "true"),
    )


def resolve_access(kubeconfig: str | None, environ: Mapping[str, str]) -> ClusterAccess:
    """--kubeconfig, else KUBECONFIG (its first existing file), else in-cluster."""
    if kubeconfig:
        return load_kubeconfig(Path(kubeconfig))
    listed = [Path(p) for p in environ.get("KUBECONFIG", "").split(":") if p]
    for candidate in listed:
        if candidate.exists():
            return load_kubeconfig(candidate)
    if listed:
        raise ConfigError(f"KUBECONFIG names no existing file: {environ['KUBECONFIG']}")
    return in_cluster(environ)
