#!/usr/bin/env python3
"""The pod sandbox calls a kubelet makes, sent to containerd's CRI plugin (runtime.v1).

    cri.py SOCKET version
    cri.py SOCKET run NAME [HOSTPORT:CONTAINERPORT[/tcp|udp] ...]   prints the sandbox ID
    cri.py SOCKET status ID                                          prints "STATE IP"
    cri.py SOCKET stop ID
    cri.py SOCKET remove ID

gRPC comes from Debian's python3-grpcio; the messages are encoded here by hand, because the CRI
API's .proto (k8s.io/cri-api) is not packaged in Debian and nothing may be fetched. Only the
fields these calls need are written, with the field numbers of api.proto (runtime.v1); replies
are decoded just as far as the fields read. An RPC error exits 1 with its status and details.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grpc

SERVICE = "/runtime.v1.RuntimeService/"
PROTOCOLS = {"tcp": 0, "udp": 1, "sctp": 2}  # enum Protocol
STATES = {0: "SANDBOX_READY", 1: "SANDBOX_NOTREADY"}  # enum PodSandboxState
TIMEOUT = 60.0


# --- protobuf wire format: varints (type 0) and length-delimited fields (type 2) ------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def number(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value) if value else b""


def message(field: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(field << 3 | 2) + varint(len(data)) + data


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; other wire types are skipped."""
    i = 0

    def read_varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = read_varint()
        kind = key & 7
        if kind == 0:
            yield key >> 3, read_varint()
        elif kind == 2:
            size = read_varint()
            yield key >> 3, data[i:i + size]
            i += size
        else:
            i += {1: 8, 5: 4}[kind]


def first(data: bytes, field: int, default: int | bytes = b"") -> int | bytes:
    return next((v for f, v in fields(data) if f == field), default)


# --- the messages ---------------------------------------------------------------------------


def port_mapping(spec: str) -> bytes:
    """``HOSTPORT:CONTAINERPORT[/PROTO]`` -> PortMapping {protocol=1, container_port=2,
    host_port=3}."""
    ports, _, proto = spec.partition("/")
    host, container = (int(p) for p in ports.split(":"))
    return number(1, PROTOCOLS[proto or "tcp"]) + number(2, container) + number(3, host)


def run_request(name: str, mappings: list[str]) -> bytes:
    """RunPodSandboxRequest {config=1: PodSandboxConfig {metadata=1 {name=1, uid=2,
    namespace=3}, hostname=2, port_mappings=5}}."""
    metadata = message(1, name) + message(2, f"uid-{name}") + message(3, "default")
    config = message(1, metadata) + message(2, name)
    config += b"".join(message(5, port_mapping(m)) for m in mappings)
    return message(1, config)


def call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    stub = channel.unary_unary(SERVICE + method, request_serializer=None,
                               response_deserializer=None)
    reply: bytes = stub(request, timeout=TIMEOUT)
    return reply


def main(argv: list[str]) -> int:
    socket, verb, *args = argv
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        try:
            if verb == "version":  # VersionResponse {runtime_name=2, runtime_version=3}
                reply = call(channel, "Version", message(1, "v1"))
                print(bytes(first(reply, 2)).decode(), bytes(first(reply, 3)).decode())
            elif verb == "run":  # RunPodSandboxResponse {pod_sandbox_id=1}
                reply = call(channel, "RunPodSandbox", run_request(args[0], args[1:]))
                print(bytes(first(reply, 1)).decode())
            elif verb == "status":  # PodSandboxStatus {state=3, network=5 {ip=1}}
                status = bytes(first(call(channel, "PodSandboxStatus", message(1, args[0])), 1))
                ip = bytes(first(bytes(first(status, 5)), 1)).decode()
                print(STATES.get(int(first(status, 3, 0)), "?"), ip or "-")
            elif verb in ("stop", "remove"):
                call(channel, f"{verb.capitalize()}PodSandbox", message(1, args[0]))
            else:
                print(f"unknown command {verb}", file=sys.stderr)
                return 2
        except grpc.RpcError as exc:
            print(f"{verb}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
