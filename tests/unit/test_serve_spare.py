"""Spare workers: a call handed to a child forked before it, over a socket pair (real forks and
descriptors, no root needed)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import pytest

from cni_bridge.serve.server import spare
from cni_bridge.serve.server.peer import Call
from cni_bridge.serve.wire import CALL_FDS


def exit_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def call_fds() -> Iterator[list[int]]:
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in CALL_FDS]
    yield fds
    for fd in fds:
        os.close(fd)


def answer_the_call(ctl: socket.socket) -> int:
    """A spare's work in these tests: say what it was handed, on the caller's connection."""
    handed = spare.receive(ctl)
    if handed is None:
        return 9
    conn, fds, call, timeline = handed
    ok = all(os.fstat(fd) for fd in fds) and len(fds) == len(CALL_FDS)
    conn.sendall(f"{call.role} {call.verb} {sorted(timeline)} {ok}".encode())
    return 0


def test_a_spare_serves_the_call_handed_to_it(call_fds: list[int]) -> None:
    ready = spare.fork(lambda: None, answer_the_call)
    caller, server_end = socket.socketpair()
    with caller, server_end:
        assert ready.hand(server_end, call_fds, Call("bridge", "ADD"), {"accept": 1.0,
                                                                          "hello": 2.0})
        caller.settimeout(10)
        assert caller.recv(200) == b"bridge ADD ['accept', 'hello', 'worker'] True"
    assert exit_status(ready.pid) == 0


def test_a_spare_whose_server_closes_the_pair_exits_unused() -> None:
    ready = spare.fork(lambda: None, answer_the_call)
    ready.close()
    assert exit_status(ready.pid) == 9  # receive() gave None: nothing was run


def test_a_dead_spare_takes_no_call(call_fds: list[int]) -> None:
    ready = spare.fork(lambda: None, lambda ctl: 0)  # exits without reading
    assert exit_status(ready.pid) == 0
    caller, server_end = socket.socketpair()
    with caller, server_end:
        assert not ready.hand(server_end, call_fds, Call("bridge", "ADD"), {})


def test_a_hand_over_without_every_descriptor_is_dropped(call_fds: list[int]) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    caller, server_end = socket.socketpair()
    with caller, server_end, ours:
        socket.send_fds(ours, [b"\x00"], [server_end.fileno(), *call_fds[:2]])
        before = len(os.listdir("/proc/self/fd"))
        assert spare.receive(theirs) is None
        # the 3 received are closed again, and the pair end: one less than before
        assert len(os.listdir("/proc/self/fd")) == before - 1


def test_serve_takes_a_count_of_spares_and_refuses_a_negative_one() -> None:
    from cni_bridge.admin.parser import build_parser
    from cni_bridge.admin.serve_cmd import ServeError, cmd_serve

    parser = build_parser()
    assert parser.parse_args(["serve"]).spare_workers == 2
    with pytest.raises(ServeError, match="--spare-workers at least 0"):
        cmd_serve(parser.parse_args(["serve", "--spare-workers", "-1"]))


def test_a_spare_makes_the_memory_it_shares_its_own_in_advance() -> None:
    """In a forked child (as a spare is): after prefault(), writing to memory shared with the
    parent no longer faults (MADV_POPULATE_WRITE, Linux 5.14+)."""
    import resource

    # The kernel's version decides the skip, not prefault()'s answer: a prefault that populates
    # nothing must fail here, not skip.
    if tuple(map(int, re.findall(r"\d+", os.uname().release)[:2])) < (5, 14):
        pytest.skip("the kernel has no MADV_POPULATE_WRITE (Linux < 5.14)")
    shared = [bytearray(4096) for _ in range(256)]  # 1 MiB written before the fork
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            populated = spare.prefault()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for page in shared:
                page[0] = 1
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            os.write(w, f"{populated} {faults}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert exit_status(pid) == 0
    populated, faults = map(int, os.read(r, 100).split())
    os.close(r)
    assert populated >= len(shared) * 4096
    assert faults < 16  # without it: one per page written, 256
    assert spare.prefault(limit=0) == 0
