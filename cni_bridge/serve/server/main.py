"""``cni-bridge serve``: start the resident server."""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import sys
from pathlib import Path

from cni_bridge import diag
from cni_bridge.serve import wire
from cni_bridge.serve.server import listener
from cni_bridge.serve.server.listener import ServeError
from cni_bridge.serve.server.loop import Options, Server

log = diag.logger(__name__)
LOG_PREFIX = "cni-bridge serve"  # the server's lines, on its stderr (the journal under systemd)


def serve(opts: Options) -> int:
    """Load everything, bind the socket, run until SIGTERM or SIGINT (see ``loop``)."""
    digest = wire.build_digest()
    if digest is None:
        raise ServeError("serve runs from the frozen build (dist/cni/cni-bridge serve): a plugin "
                         "hands its call only to a server of its own build")
    diag.configure(os.environ, "INFO", LOG_PREFIX)
    # First, so that nothing started below inherits systemd's LISTEN_* variables.
    activated = listener.take_activated(opts.socket)
    from cni_bridge.net.netns import load_setns
    from cni_bridge.node import owner as nodeowner
    from cni_bridge.node import records
    from cni_bridge.node.state import sweep_logged
    from cni_bridge.serve.server.peer import own_identity
    from cni_bridge.serve.server.preload import preload
    from cni_bridge.serve.server.view import RecordsView, ServerView
    from cni_bridge.serve.server.watch import open_watch

    modules = preload()
    setns = load_setns()  # resolved once here, not again in every worker
    root = Path(records.state_root())  # claimed: a dead namespace's records are not ours
    sweep_logged()
    view = ServerView(opts.socket, digest, os.stat("/proc/self/ns/net").st_ino, RecordsView(root),
                      netns_cookie=nodeowner.netns_cookie())
    watcher = None
    try:
        watcher = open_watch()
    except OSError as exc:
        log.warning("no nftables notifications (%s): the firewall is checked every %gs only",
                    exc, opts.check_interval)
    sock, inode = (activated, None) if activated is not None else listener.bind(opts.socket)
    gc.collect()
    gc.freeze()  # what is loaded now stays: forked workers share it
    log.info("serving on %s%s: pid %d, build %s, network namespace %d (cookie %s), records "
             "under %s, %d modules loaded, up to %d calls at once", opts.socket,
             " (systemd's socket)" if inode is None else "", os.getpid(), digest,
             view.netns, view.netns_cookie, root, modules, opts.max_workers)
    notify_ready()
    opts = dataclasses.replace(opts, executable=opts.executable or sys.argv[0])
    return Server(opts, sock, inode, view, own_identity(), watcher, setns).run()


def notify_ready() -> None:
    """Tell systemd (Type=notify) that the socket is up, when it started us."""
    path = os.environ.pop("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", path, exc)
