"""The server's socket file is removed at stop only when it is still the one it made."""

from __future__ import annotations

import os
from pathlib import Path

from cni_bridge.serve.server import listener


def test_stop_removes_the_socket_it_made(tmp_path: Path) -> None:
    path = str(tmp_path / "serve.sock")
    sock, ours = listener.bind(path)
    sock.close()
    listener.remove(path, ours)
    assert not os.path.exists(path)


def test_stop_keeps_a_replacement_that_got_the_same_inode(tmp_path: Path) -> None:
    """Another server replaced the file while this one hung; on a disk filesystem the new file
    can get the unlinked one's inode number (here: same device and inode, made later)."""
    path = str(tmp_path / "serve.sock")
    sock, _ = listener.bind(path)
    sock.close()
    dev, ino, ctime = listener.identity(path)
    listener.remove(path, (dev, ino, ctime - 1))
    assert os.path.exists(path)
