"""nft scripts run in this process by libnftables (Debian's libnftables1, which the nftables
package depends on), through ctypes: no ``nft`` process per call.

A context per process and network namespace, made on first use: its netlink socket stays in
the namespace it was opened in, so none is reused after a fork or setns(). Traps:
- ``nft_ctx_new`` exits the process when it cannot open a netfilter socket: one is tried first,
  and where that fails the ``nft`` command runs instead, to report it as a CNI error.
- A script in a buffer gets errors quoting its first line; in a file (a memfd) the failing
  line, as ``nft -f -`` does, whose input name and argv results carry too.
"""

from __future__ import annotations

# The C module: socket.py builds its enums on import (~2 ms per plugin call); this needs none.
import _socket
import ctypes
import os
import threading
import time
from dataclasses import dataclass

from cni_bridge.diag import logger
from cni_bridge.firewall.commands import CommandResult
from cni_bridge.firewall.nft.executor import NFT, NftExecutor, nft_command
from cni_bridge.netlink import NETLINK_NETFILTER

log = logger(__name__)

LIBRARY = "libnftables.so.1"
# libnftables.h: enum nft_ctx_output_flags (nftables 1.0.6).
OUTPUT_JSON = 1 << 4
OUTPUT_TERSE = 1 << 11
SCRIPT_NAME = "/dev/stdin"  # how ``nft -f -`` names its input in errors


@dataclass(frozen=True)
class _Context:
    handle: int  # struct nft_ctx *
    owner: tuple[int, int]  # device and inode of its network namespace (a fork drops it)


@dataclass
class _Process:
    lib: ctypes.CDLL | str | None = None
    context: _Context | None = None


_lock = threading.Lock()
_process = _Process()


def _after_fork_in_child() -> None:
    """The lock may have been held by another thread; the parent's context is not the child's
    (and is never freed here)."""
    global _lock
    _lock = threading.Lock()
    _process.context = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _namespace_key() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBRARY, use_errno=True)
    vp, cp, uint = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint
    for name, restype, argtypes in (
            ("nft_ctx_new", vp, [ctypes.c_uint32]),
            ("nft_ctx_free", None, [vp]),
            ("nft_ctx_buffer_output", ctypes.c_int, [vp]),
            ("nft_ctx_buffer_error", ctypes.c_int, [vp]),
            ("nft_ctx_output_set_flags", None, [vp, uint]),
            ("nft_ctx_set_dry_run", None, [vp, ctypes.c_bool]),
            ("nft_run_cmd_from_filename", ctypes.c_int, [vp, cp]),
            ("nft_ctx_get_output_buffer", cp, [vp]),
            ("nft_ctx_get_error_buffer", cp, [vp])):
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    return lib


def _library() -> ctypes.CDLL | str:
    if _process.lib is None:
        try:
            _process.lib = _load()
        except (OSError, AttributeError) as exc:  # missing, or without a symbol we need
            _process.lib = f"cannot load {LIBRARY}: {exc}"
    return _process.lib


def _new_context(lib: ctypes.CDLL, owner: tuple[int, int]) -> _Context:
    _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_NETFILTER).close()  # see above
    handle = lib.nft_ctx_new(0)
    if not handle:
        raise OSError("nft_ctx_new failed")
    if lib.nft_ctx_buffer_output(handle) or lib.nft_ctx_buffer_error(handle):
        lib.nft_ctx_free(handle)
        raise OSError("cannot buffer libnftables output")
    return _Context(handle, owner)


def _context(lib: ctypes.CDLL) -> _Context | str:
    try:
        owner = _namespace_key()
    except OSError as exc:  # no /proc: the namespace cannot be told
        return f"cannot tell the network namespace: {exc}"
    current = _process.context
    if current is not None and current.owner == owner:
        return current
    _process.context = None
    if current is not None:  # this process moved to another namespace (a fork resets it)
        lib.nft_ctx_free(current.handle)
    try:
        _process.context = _new_context(lib, owner)
    except OSError as exc:
        return f"no libnftables context: {exc}"
    return _process.context


def _run(lib: ctypes.CDLL, context: _Context, script: str, flags: int,
         dry_run: bool) -> tuple[int, str, str]:
    handle = context.handle
    lib.nft_ctx_output_set_flags(handle, flags)
    lib.nft_ctx_set_dry_run(handle, dry_run)
    try:
        fd = os.memfd_create("nft-script", os.MFD_CLOEXEC)
    except OSError as exc:
        return 1, "", f"cannot hand the script to libnftables: {exc}"
    path = f"/proc/self/fd/{fd}"
    try:
        data = script.encode()
        while data:
            data = data[os.write(fd, data):]
        rc = lib.nft_run_cmd_from_filename(handle, path.encode())
    except OSError as exc:
        return 1, "", f"cannot hand the script to libnftables: {exc}"
    finally:
        os.close(fd)
    out = (lib.nft_ctx_get_output_buffer(handle) or b"").decode(errors="replace")
    err = (lib.nft_ctx_get_error_buffer(handle) or b"").decode(errors="replace")
    return (0 if rc == 0 else 1), out, err.replace(f"{path}:", f"{SCRIPT_NAME}:")


@dataclass(frozen=True)
class InProcessNft:
    """libnftables in this process; `fallback` where the library cannot be used."""

    fallback: NftExecutor

    def __call__(self, script: str, *, json: bool = False, terse: bool = False,
                 dry_run: bool = False) -> CommandResult:
        argv, _ = nft_command(NFT, script, json=json, terse=terse, dry_run=dry_run)
        started = time.monotonic()
        with _lock:
            lib = _library()
            context = lib if isinstance(lib, str) else _context(lib)
            if not isinstance(lib, str) and not isinstance(context, str):
                flags = (OUTPUT_JSON if json else 0) | (OUTPUT_TERSE if terse else 0)
                rc, out, err = _run(lib, context, script, flags, dry_run)
                log.debug("%s (libnftables): rc=%d in %.1f ms", " ".join(argv), rc,
                          (time.monotonic() - started) * 1000)
                return CommandResult(argv, rc, out, err)
        log.debug("nft in-process unavailable (%s): running the command", context)
        return self.fallback(script, json=json, terse=terse, dry_run=dry_run)
