#!/usr/bin/env python3
"""One-shot TCP/UDP echo server and probe for connectivity tests (stdlib only).

    serve --proto tcp|udp --port P [--bind ADDR] [--reply TEXT] [--timeout S]
        Binds (dual-stack "::" by default), prints "ready", serves ONE connection or datagram:
        prints "peer <ip>", echoes the payload followed by the reply text, exits 0.
        Exits 1 if nothing arrives within --timeout (so no server outlives its test).
    probe --proto tcp|udp --to IP --port P [--timeout S]
        Sends a random payload, requires it echoed back, prints "local <ip>" then the reply text
        on its own line. UDP is retried within the timeout (datagrams may be lost). Exit 1 on
        failure.
    fetch URL [--timeout S]
        GETs an http:// URL (a web server in a container), retried until the timeout (it may
        not listen yet), and prints the body; "fetch failed: ..." and exit 1 otherwise.

The peer address printed by the server is how masquerading is asserted.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys
import time

MAX = 65535
UDP_LINGER = 0.3  # answer retried datagrams from the same peer this long after the first one


def normalise(ip: str) -> str:
    """Strip a scope id and unwrap IPv4-mapped IPv6 (what a dual-stack socket reports)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def say(line: str) -> None:
    print(line, flush=True)


def bound_socket(proto: str, bind: str | None, port: int) -> socket.socket:
    host = bind or "::"
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family_of(host), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if bind is None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    if proto == "tcp":
        sock.listen(1)
    return sock


def serve_tcp(sock: socket.socket, reply: bytes) -> None:
    conn, peer = sock.accept()
    with conn:
        say(f"peer {normalise(peer[0])}")
        conn.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(MAX)
            if not chunk:
                break
            data += chunk
        conn.sendall(data + reply)


def serve_udp(sock: socket.socket, reply: bytes) -> None:
    data, peer = sock.recvfrom(MAX)
    say(f"peer {normalise(peer[0])}")
    sock.sendto(data + reply, peer)
    # Linger briefly: if our answer was lost, the probe's retry still gets one.
    deadline = time.monotonic() + UDP_LINGER
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            again, who = sock.recvfrom(MAX)
        except OSError:
            break
        if who == peer:
            sock.sendto(again + reply, who)


def serve(args: argparse.Namespace) -> int:
    sock = bound_socket(args.proto, args.bind, args.port)
    sock.settimeout(args.timeout)
    say("ready")
    reply = args.reply.encode()
    try:
        with sock:
            (serve_tcp if args.proto == "tcp" else serve_udp)(sock, reply)
    except TimeoutError:
        print("timeout: nothing arrived", file=sys.stderr)
        return 1
    return 0


def probe_tcp(to: str, port: int, payload: bytes, timeout: float) -> tuple[str, bytes]:
    with socket.create_connection((to, port), timeout=timeout) as sock:
        local = sock.getsockname()[0]
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(MAX):
            data += chunk
    return local, data


def probe_udp(to: str, port: int, payload: bytes, timeout: float) -> tuple[str, bytes]:
    deadline = time.monotonic() + timeout
    with socket.socket(family_of(to), socket.SOCK_DGRAM) as sock:
        sock.connect((to, port))
        local = sock.getsockname()[0]
        while (left := deadline - time.monotonic()) > 0:
            sock.send(payload)
            sock.settimeout(min(0.5, left))
            try:
                return local, sock.recv(MAX)
            except (TimeoutError, ConnectionRefusedError):
                # Refused (ICMP port unreachable) may mean the server is not bound yet: retry.
                time.sleep(0.05)
    raise TimeoutError(f"no UDP answer from {to}:{port} within {timeout}s")


def probe(args: argparse.Namespace) -> int:
    payload = secrets.token_hex(8).encode() + b"\n"
    fn = probe_tcp if args.proto == "tcp" else probe_udp
    try:
        local, data = fn(args.to, args.port, payload, args.timeout)
    except OSError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    if not data.startswith(payload):
        print(f"probe failed: echo mismatch: {data!r}", file=sys.stderr)
        return 1
    say(f"local {normalise(local)}")
    say(data[len(payload) :].decode(errors="replace"))
    return 0


def fetch(args: argparse.Namespace) -> int:
    import urllib.request

    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with urllib.request.urlopen(args.url, timeout=2) as reply:
                say(reply.read().decode(errors="replace").strip())
            return 0
        except OSError as exc:
            if time.monotonic() > deadline:
                say(f"fetch failed: {exc}")
                return 1
            time.sleep(0.2)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve")
    srv.add_argument("--proto", choices=["tcp", "udp"], required=True)
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--bind")
    srv.add_argument("--reply", default="pong")
    srv.add_argument("--timeout", type=float, default=30.0)
    prb = sub.add_parser("probe")
    prb.add_argument("--proto", choices=["tcp", "udp"], required=True)
    prb.add_argument("--to", required=True)
    prb.add_argument("--port", type=int, required=True)
    prb.add_argument("--timeout", type=float, default=3.0)
    get = sub.add_parser("fetch")
    get.add_argument("url")
    get.add_argument("--timeout", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    return {"serve": serve, "probe": probe, "fetch": fetch}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
