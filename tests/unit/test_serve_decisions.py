"""Who is served (the decision on a first frame) and how a worker takes on its caller's process
state."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest

from cni_bridge.serve import wire
from cni_bridge.serve.server import peer, worker
from cni_bridge.serve.server.peer import Identity

HOME = Identity(pid=100, uid=0, user_ns=4026531837, pid_ns=4026531836)
DIGEST = "0e068f26f270"


def frame(kind: str, *fields: bytes | str | int, version: int = wire.VERSION) -> wire.Message:
    """A frame as the server receives it."""
    data = bytearray(wire.encode(kind, *fields))
    data[4] = version
    received = wire.split_frame(bytes(data), wire.MAX_FRAME)
    assert received is not None
    return received[0]


def hello(digest: str = DIGEST, role: str = "bridge", verb: str = "ADD") -> wire.Message:
    return frame(wire.CALL, digest, role, verb)


def caller(**changes: Any) -> Identity:
    fields = {"pid": 4242, "uid": 0, "user_ns": HOME.user_ns, "pid_ns": HOME.pid_ns, **changes}
    return Identity(**fields)


@pytest.mark.parametrize(("message", "who", "reason"), [
    (hello(), caller(), None),
    (hello(), caller(uid=1000), "caller uid 1000 is not root"),
    (hello(), caller(pid_ns=4026532000), "another PID namespace"),
    (hello(), caller(pid=0, user_ns=None, pid_ns=None), "another PID namespace"),
    (hello(), caller(user_ns=4026532001), "another user namespace"),
    (hello(digest="aaaaaaaaaaaa"), caller(), "build aaaaaaaaaaaa is not the server's"),
    (hello(verb="VERSION"), caller(), "bridge VERSION is not a served call"),
    (hello(role="cni-bridge"), caller(), "is not a served call"),
    (frame(wire.CALL, DIGEST, "bridge", "ADD", version=1), caller(),
     "caller speaks another protocol (version byte 1, not 2)"),
    (frame(wire.CALL, DIGEST, "bridge"), caller(), "malformed"),
    (frame(wire.RESULT, 0, b""), caller(), "not a call or status"),
    (frame(wire.STATUS), caller(pid_ns=1), None),  # status: root only
    (frame(wire.STATUS), caller(uid=5), "not root"),
])
def test_refusal(message: wire.Message, who: Identity, reason: str | None) -> None:
    got = peer.refusal(message, who, HOME, DIGEST)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_a_server_without_digest_serves_no_call() -> None:
    assert peer.refusal(hello(), caller(), HOME, None) is not None


def test_peer_identity_of_a_connected_process() -> None:
    a, b = socket.socketpair()
    with a, b:
        who = peer.peer_identity(a)
    me = peer.own_identity()
    assert (who.pid, who.uid, who.user_ns, who.pid_ns) == (os.getpid(), os.getuid(),
                                                            me.user_ns, me.pid_ns)


ENVIRON = {"CNI_COMMAND": "DEL", "PATH": "/bin"}
REQUEST = ("/opt/cni/bin/portmap", 0o27, "", b"{}", "CNI_COMMAND=DEL", "PATH=/bin")


def test_request_parse_reads_every_field() -> None:
    req = worker.CallRequest.parse(frame(wire.REQUEST, *REQUEST))
    assert (req.argv0, req.umask, req.read_stdin()) == ("/opt/cni/bin/portmap", 0o27, b"{}")
    assert req.environ == ENVIRON
    for broken in (REQUEST[:3], (REQUEST[0], "022", *REQUEST[2:])):  # a field short, not a number
        with pytest.raises(wire.ProtocolError):
            worker.CallRequest.parse(frame(wire.REQUEST, *broken))
    with pytest.raises(wire.ProtocolError):
        worker.CallRequest.parse(frame(wire.RESULT, *REQUEST))


def test_request_environ_reads_as_os_environ_would() -> None:
    """The first of a name wins; entries without a name or "=" are skipped; other bytes kept."""
    req = worker.CallRequest.parse(frame(wire.REQUEST, *REQUEST[:4], "A=1", "A=2", "B=x=y",
                                         "NOEQUALS", "=empty", b"C=\xff"))
    assert req.environ == {"A": "1", "B": "x=y", "C": "\udcff"}


def test_unreadable_stdin_reaches_the_dispatcher_as_an_os_error() -> None:
    req = worker.CallRequest.parse(frame(wire.REQUEST, REQUEST[0], 0o22, "[Errno 9] Bad file",
                                         b""))
    with pytest.raises(OSError, match="Bad file"):
        req.read_stdin()


def test_adopt_takes_the_callers_environment_umask_and_argv0(
        monkeypatch: pytest.MonkeyPatch) -> None:
    saved_env, saved_umask = dict(os.environ), os.umask(0o022)
    monkeypatch.setattr(sys, "argv", ["cni-bridge", "serve"])
    try:
        worker.forget_server()  # a spare does it before its call, a forked worker at it
        assert dict(os.environ) == {}
        worker.adopt(worker.CallRequest.parse(frame(wire.REQUEST, *REQUEST)))
        assert dict(os.environ) == ENVIRON
        assert os.umask(0o022) == 0o27
        assert sys.argv[0] == "/opt/cni/bin/portmap"
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(saved_umask)


def test_enter_caller_enters_mount_then_network_namespace() -> None:
    calls: list[tuple[int, int]] = []

    def fake_setns(fd: int, kind: int) -> None:
        calls.append((fd, kind))
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(PermissionError):
        worker.enter_caller([11, 12, 13, 14, 15], fake_setns)
    assert calls == [(12, worker.CLONE_NEWNS)]  # nothing else changed after a failure


def test_preload_covers_every_plugin_module_and_no_operator_one() -> None:
    from cni_bridge.serve.server.preload import SKIPPED, package_modules

    names = package_modules()
    for needed in ("cni_bridge.bridge.plugin", "cni_bridge.portmap.plugin",
                   "cni_bridge.ipam.host_local.plugin", "cni_bridge.firewall.nft.backend",
                   "cni_bridge.net.netlink", "cni_bridge.entry", "cni_bridge.serve.server.worker"):
        assert needed in names
    assert not SKIPPED & set(names)
    assert all(name == "cni_bridge" or name.startswith("cni_bridge.") for name in names)
