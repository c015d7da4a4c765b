"""``cni-bridge _echo``: a one-shot TCP echo server and probe, run in namespaces by the demo.

The server prints "ready", then the peer it saw: how the demo shows masquerading and port
forwarding. Part of the executable because the frozen build has no python3.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys

MAX = 65535


def normalise(ip: str) -> str:
    """Drop a scope id and unwrap an IPv4-mapped IPv6 address (what a dual-stack socket shows)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def say(line: str) -> None:
    print(line, flush=True)


def listening_socket(port: int) -> socket.socket:
    """Dual stack on [::]:port; IPv4 only where IPv6 is disabled."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        host = "::"
    except OSError:
        sock, host = socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4)
    return sock


def serve(port: int, timeout: float, reply: str) -> int:
    with listening_socket(port) as sock:
        sock.settimeout(timeout)
        say("ready")
        try:
            conn, peer = sock.accept()
        except TimeoutError:
            print("timeout: nobody connected", file=sys.stderr)
            return 1
        with conn:
            say(f"peer {normalise(peer[0])}")
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(MAX)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data + reply.encode() + b"\n")
    return 0


def probe(to: str, port: int, timeout: float) -> int:
    payload = secrets.token_hex(8).encode() + b"\n"
    try:
        with socket.create_connection((to, port), timeout=timeout) as sock:
            local = sock.getsockname()[0]
            sock.sendall(payload)
            data = b""
            while chunk := sock.recv(MAX):
                data += chunk
    except OSError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    if not data.startswith(payload):
        print(f"probe failed: the echo did not match: {data!r}", file=sys.stderr)
        return 1
    say(f"local {normalise(local)}")
    say(f"reply {data[len(payload):].decode(errors='replace').strip()}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cni-bridge _echo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--timeout", type=float, default=10.0)
    srv.add_argument("--reply", default=socket.gethostname())
    prb = sub.add_parser("probe")
    prb.add_argument("--to", required=True)
    prb.add_argument("--port", type=int, required=True)
    prb.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.port, args.timeout, args.reply)
    return probe(args.to, args.port, args.timeout)
