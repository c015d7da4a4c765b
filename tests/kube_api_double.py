#!/usr/bin/env python3
"""A TEST DOUBLE of the Kubernetes API server: the node endpoints `cni-bridge node-agent` uses.

Why a double: no package installable here ships a Kubernetes API server (kube-apiserver needs
etcd and a cluster's worth of certificates), so the agent's tests run against this small
server. It speaks the real wire protocol of the endpoints the agent uses, from Node objects in
the shape the API serves them (apiVersion v1, kind Node, metadata, spec.podCIDR(s),
status.addresses/capacity/conditions/nodeInfo: the official Python client parses them), and
nothing more. Plain Python 3 standard library only:
runnable as ``python3 tests/kube_api_double.py`` without the project's venv, inside a network
namespace (``ip netns exec NS python3 ...``).

Endpoints (the API port, ``--listen HOST:PORT``; plain HTTP, or HTTPS with --tls-cert/--tls-key,
and client certificates required with --client-ca)
  GET /api/v1/nodes            NodeList: {"kind": "NodeList", "apiVersion": "v1",
                               "metadata": {"resourceVersion": "N"}, "items": [Node...]}
  GET /api/v1/nodes?watch=1&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=S]
                               200, Transfer-Encoding: chunked, one JSON event per line:
                               {"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR",
                               "object": ...}. Events after N are replayed from the history
                               window; an N older than the window gets an ERROR event whose
                               object is a Status with code 410, reason "Expired", then the
                               stream ends (as the real server does). N empty or "0": ADDED
                               for every node, then changes. BOOKMARK every
                               --bookmark-interval seconds when asked for; the stream ends
                               cleanly after timeoutSeconds.
  Authentication: with --token T, requests need "Authorization: Bearer T" or a client
  certificate of --client-ca (else 401 Status).
  A request bearing a token given with --forbidden-token gets a 403 Status:
  'nodes is forbidden: User "system:serviceaccount:kube-system:cni-bridge-node" cannot list
  resource "nodes" in API group "" at the cluster scope' (verb "watch" for a watch).

Control interface (for tests): HTTP with JSON bodies on a unix socket (``--control PATH``).
  GET  /state                 {"resourceVersion": N, "oldest": N, "nodes": [names],
                               "watches": open watch streams, "lists": list requests served,
                               "watchRequests": watch requests served, "serving": bool}
  POST /nodes                 upsert one node -> ADDED or MODIFIED event. Body: a full Node
                               object, or the short form {"name": "n1", "podCIDRs":
                               ["10.244.1.0/24", "fd00:10:244:1::/64"], "internalIPs":
                               ["192.0.2.11"], "labels": {...}}; podCIDRs [] or absent: a
                               node without pod CIDRs. Answers {"resourceVersion": N}.
  DELETE /nodes/NAME          -> DELETED event (404 if unknown)
  POST /churn                 {"count": K, "name": "n1"}: K MODIFIED events of that node (a
                               label "churn" counting up), for load tests
  POST /drop-watches          close every open watch stream abruptly (no final chunk)
  POST /stop                  stop serving the API port (connections refused) and drop watches
  POST /start                 serve the API port again (same address)
  POST /expire                forget the history: a watch from any resourceVersion before now
                               gets 410 Expired
The same file is its own client: ``python3 tests/kube_api_double.py ctl --control PATH
METHOD PATH [JSON]`` prints the answer (exit 1 on an HTTP error).

Command line: ``python3 tests/kube_api_double.py --listen 203.0.113.200:6443 --control
/tmp/x/ctl.sock [--token T] [--forbidden-token T] [--nodes FILE.json] [--history 1000]
[--bookmark-interval 5] [--tls-cert C --tls-key K [--client-ca CA]]``. --nodes holds a JSON
list of nodes (full or short form). The control socket appears once both ports are listening.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICE_ACCOUNT_USER = "system:serviceaccount:kube-system:cni-bridge-node"


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_from_short(short: dict[str, Any]) -> dict[str, Any]:
    """A Node as the API serves it, from {"name", "podCIDRs", "internalIPs", "labels"}."""
    name = short["name"]
    cidrs = list(short.get("podCIDRs") or [])
    addresses = [{"type": "InternalIP", "address": ip} for ip in short.get("internalIPs", [])]
    addresses.append({"type": "Hostname", "address": name})
    spec: dict[str, Any] = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
              "kubernetes.io/os": "linux"}
    labels.update(short.get("labels", {}))
    stamp = now_stamp()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid4()),
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            "creationTimestamp": stamp,
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "capacity": {"cpu": "2", "ephemeral-storage": "20470152Ki", "hugepages-2Mi": "0",
                         "memory": "4025808Ki", "pods": "110"},
            "allocatable": {"cpu": "2", "ephemeral-storage": "18865076110",
                            "hugepages-2Mi": "0", "memory": "3923408Ki", "pods": "110"},
            "conditions": [_condition(kind, stamp) for kind in
                           ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64", "bootID": str(uuid.uuid4()),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": os.uname().release, "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0", "machineID": uuid.uuid4().hex,
                "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": str(uuid.uuid4()),
            },
        },
    }


CONDITION_TEXT = {
    "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory "
                       "available"),
    "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
}


def _condition(kind: str, stamp: str) -> dict[str, str]:
    status, reason, message = CONDITION_TEXT[kind]
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}


def status_object(code: int, reason: str, message: str, kind: str = "nodes") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": {"kind": kind}, "code": code}


def send_json(handler: http.server.BaseHTTPRequestHandler, code: int,
              body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class Store:
    """The nodes, the resourceVersion counter and the event history (one lock for all)."""

    def __init__(self, history: int) -> None:
        self.cond = threading.Condition()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.rv = 1
        self.oldest = 1  # events after `oldest` are in the history window
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.window = history
        self.counters = {"lists": 0, "watchRequests": 0, "watches": 0}

    def _record(self, kind: str, obj: dict[str, Any]) -> int:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, json.loads(json.dumps(obj))))
        if len(self.history) > self.window:
            dropped = self.history.pop(0)
            self.oldest = dropped[0]
        self.cond.notify_all()
        return self.rv

    def upsert(self, body: dict[str, Any]) -> int:
        node = body if body.get("kind") == "Node" else node_from_short(body)
        name = node["metadata"]["name"]
        with self.cond:
            old = self.nodes.get(name)
            if old is not None:  # same identity, as an update keeps it
                node["metadata"]["uid"] = old["metadata"]["uid"]
                node["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            self.nodes[name] = node
            return self._record("MODIFIED" if old else "ADDED", node)

    def delete(self, name: str) -> int | None:
        with self.cond:
            node = self.nodes.pop(name, None)
            return None if node is None else self._record("DELETED", node)

    def churn(self, name: str, count: int) -> int:
        with self.cond:
            node = self.nodes[name]
            for _ in range(count):
                labels = node["metadata"].setdefault("labels", {})
                labels["churn"] = str(int(labels.get("churn", "0")) + 1)
                self._record("MODIFIED", node)
            return self.rv

    def expire(self) -> None:
        with self.cond:
            self.history.clear()
            self.oldest = self.rv

    def node_list(self) -> dict[str, Any]:
        with self.cond:
            self.counters["lists"] += 1
            items = []
            for node in self.nodes.values():
                item = json.loads(json.dumps(node))
                item.pop("kind", None)  # list items carry no kind/apiVersion
                item.pop("apiVersion", None)
                items.append(item)
            return {"kind": "NodeList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items}


class Api:
    """The API port: started, stopped and restarted on the same address."""

    def __init__(self, opts: argparse.Namespace, store: Store) -> None:
        self.opts = opts
        self.store = store
        self.server: socketserver.ThreadingTCPServer | None = None
        self.watch_sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.server is not None:
                return
            host, _, port = self.opts.listen.rpartition(":")
            host = host.strip("[]")
            handler = type("Handler", (ApiHandler,), {"api": self})
            server_class = _server_class(host)
            server = server_class((host, int(port)), handler)
            if self.opts.tls_cert:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(self.opts.tls_cert, self.opts.tls_key)
                if self.opts.client_ca:  # client certificates signed by it are required
                    ctx.load_verify_locations(self.opts.client_ca)
                    ctx.verify_mode = ssl.CERT_REQUIRED
                server.socket = ctx.wrap_socket(server.socket, server_side=True)
            self.server = server
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.drop_watches()

    def drop_watches(self) -> None:
        with self.lock:
            sockets = list(self.watch_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _server_class(host: str) -> type[socketserver.ThreadingTCPServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return type("Server", (socketserver.ThreadingTCPServer,),
                {"address_family": family, "allow_reuse_address": True,
                 "daemon_threads": True})


class ApiHandler(http.server.BaseHTTPRequestHandler):
    api: Api
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.api.opts.verbose:
            sys.stderr.write("kube-api-double: " + format % args + "\n")

    def send_json(self, code: int, body: dict[str, Any]) -> None:
        send_json(self, code, body)

    def authorized(self, verb: str) -> bool:
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else None
        if token is not None and token in self.api.opts.forbidden_token:
            self.send_json(403, status_object(
                403, "Forbidden", f'nodes is forbidden: User "{SERVICE_ACCOUNT_USER}" cannot '
                f'{verb} resource "nodes" in API group "" at the cluster scope'))
            return False
        certified = isinstance(self.connection, ssl.SSLSocket) and \
            bool(self.connection.getpeercert())  # verified against --client-ca
        if self.api.opts.token and token != self.api.opts.token and not certified:
            self.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path != "/api/v1/nodes":
            self.send_json(404, status_object(404, "NotFound", "the server could not find "
                                              "the requested resource"))
            return
        watching = query.get("watch", "") in ("1", "true")
        if not self.authorized("watch" if watching else "list"):
            return
        if not watching:
            self.send_json(200, self.api.store.node_list())
            return
        self.watch(query)

    def send_event(self, kind: str, obj: dict[str, Any]) -> None:
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, query: dict[str, str]) -> None:
        store = self.api.store
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with self.api.lock:
            self.api.watch_sockets.add(self.connection)
        with store.cond:
            store.counters["watchRequests"] += 1
            store.counters["watches"] += 1
        try:
            self.stream(query)
            self.wfile.write(b"0\r\n\r\n")  # a clean end (timeoutSeconds, or after 410)
            self.wfile.flush()
        except OSError:
            pass  # dropped on purpose, or the client went away
        finally:
            with self.api.lock:
                self.api.watch_sockets.discard(self.connection)
            with store.cond:
                store.counters["watches"] -= 1
            self.close_connection = True

    def stream(self, query: dict[str, str]) -> None:
        store = self.api.store
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.api.opts.bookmark_interval
        with store.cond:
            start = query.get("resourceVersion", "")
            if start in ("", "0"):
                backlog = [("ADDED", n) for n in store.nodes.values()]
                sent = store.rv
            else:
                sent = int(start)
                if sent < store.oldest:
                    message = f"too old resource version: {sent} ({store.oldest})"
                    backlog = [("ERROR", status_object(410, "Expired", message))]
                    sent = -1
                else:
                    backlog = [(k, o) for rv, k, o in store.history if rv > sent]
                    sent = store.rv
        for kind, obj in backlog:
            self.send_event(kind, obj)
        while sent >= 0 and time.monotonic() < deadline:
            with store.cond:
                if store.rv <= sent:  # an event recorded while we were sending: no wait
                    store.cond.wait(0.1)
                fresh = [(rv, k, o) for rv, k, o in store.history if rv > sent]
                if sent < store.oldest and not fresh and store.rv > sent:
                    return  # expired under us: the client re-watches and gets 410
                sent = max(sent, store.rv)
            for _, kind, obj in fresh:
                self.send_event(kind, obj)
            if bookmarks and time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + self.api.opts.bookmark_interval
                self.send_event("BOOKMARK", {"kind": "Node", "apiVersion": "v1",
                                             "metadata": {"resourceVersion": str(sent)}})
            if self.connection not in self.api.watch_sockets:
                return


class ControlHandler(http.server.BaseHTTPRequestHandler):
    api: Api
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "control"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def answer(self, code: int, body: dict[str, Any]) -> None:
        send_json(self, code, body)

    def body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        store = self.api.store
        if self.path != "/state":
            self.answer(404, {"error": f"no {self.path}"})
            return
        with store.cond:
            state = {"resourceVersion": store.rv, "oldest": store.oldest,
                     "nodes": sorted(store.nodes), "serving": self.api.server is not None,
                     **store.counters}
        self.answer(200, state)

    def do_DELETE(self) -> None:  # noqa: N802
        name = self.path.removeprefix("/nodes/")
        rv = self.api.store.delete(name)
        if rv is None:
            self.answer(404, {"error": f"no node {name}"})
        else:
            self.answer(200, {"resourceVersion": rv})

    def do_POST(self) -> None:  # noqa: N802
        store, api = self.api.store, self.api
        try:
            body = self.body()
            if self.path == "/nodes":
                self.answer(200, {"resourceVersion": store.upsert(body)})
                return
            if self.path == "/churn":
                rv = store.churn(body["name"], int(body.get("count", 1)))
                self.answer(200, {"resourceVersion": rv})
                return
            actions = {"/drop-watches": api.drop_watches, "/stop": api.stop,
                       "/start": api.start, "/expire": store.expire}
            action = actions.get(self.path)
            if action is None:
                self.answer(404, {"error": f"no {self.path}"})
                return
            action()
            self.answer(200, {"resourceVersion": store.rv})
        except (KeyError, ValueError, OSError) as exc:
            self.answer(400, {"error": f"{type(exc).__name__}: {exc}"})


class UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def control(path: str, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    """One control request (also importable by tests): (HTTP status, decoded answer)."""
    conn = UnixConnection(path)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, target, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def serve(opts: argparse.Namespace) -> int:
    store = Store(opts.history)
    if opts.nodes:
        with open(opts.nodes) as f:
            for node in json.load(f):
                store.upsert(node)
    api = Api(opts, store)
    api.start()
    if os.path.exists(opts.control):
        os.unlink(opts.control)
    handler = type("Control", (ControlHandler,), {"api": api})
    ctl = UnixHttpServer(opts.control, handler)
    print(f"kube-api-double: API on {opts.listen}, control on {opts.control}", file=sys.stderr)
    try:
        ctl.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        ctl.server_close()
        if os.path.exists(opts.control):
            os.unlink(opts.control)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["ctl"]:
        p = argparse.ArgumentParser(prog="kube_api_double.py ctl")
        p.add_argument("--control", required=True)
        p.add_argument("method")
        p.add_argument("path")
        p.add_argument("body", nargs="?")
        o = p.parse_args(argv[1:])
        code, answer = control(o.control, o.method.upper(), o.path,
                               None if o.body is None else json.loads(o.body))
        print(json.dumps(answer))
        return 0 if code < 300 else 1
    p = argparse.ArgumentParser(description="Kubernetes API double (node endpoints only)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--control", required=True, metavar="PATH", help="control unix socket")
    p.add_argument("--token", help="the bearer token to require")
    p.add_argument("--forbidden-token", action="append", default=[],
                   help="a token that is known but may not list/watch nodes (403)")
    p.add_argument("--nodes", help="JSON file: a list of nodes (full or short form)")
    p.add_argument("--history", type=int, default=1000, help="events kept for watches")
    p.add_argument("--bookmark-interval", type=float, default=5.0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--client-ca", help="with --tls-cert: require client certificates of this CA")
    p.add_argument("--verbose", action="store_true")
    opts = p.parse_args(argv)
    signal_exit()
    return serve(opts)


def signal_exit() -> None:
    """SIGTERM ends the server as Ctrl-C does (the control socket is removed)."""
    import signal

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
