"""A cache of one store's decoded reservations, so a call need not open every file (~10 µs
each, 10 ms at 1,000 containers; the reference reads them all on every ADD, DEL and CHECK).

Only ever a cache, kept outside the store (whose files stay the reference's): missing, damaged or
stale means a full scan. Staleness costs no listing: each session that writes the index sets the
directory's mtime to a stamp (two seconds ago, to the ns) recorded in it. Any file created or
removed, by anyone, sets the mtime to "now", which never equals a stamp; writers never rewrite
reservation files in place. A filesystem that cannot keep ns stamps gets no index.
"""

from __future__ import annotations

import json
import os
import time

from cni_bridge.ipam.host_local.store import Owner
from cni_bridge.node.records import state_base  # the attachment records' root (light imports)

INDEX_DIR = "ipam-index"
FORMAT = 1
STAMP_AGE_NS = 2_000_000_000


def index_path(dir_stat: os.stat_result) -> str:
    return os.path.join(state_base(), INDEX_DIR, f"{dir_stat.st_dev}-{dir_stat.st_ino}.index")


def load(dir_fd: int) -> dict[str, Owner] | None:
    """The reservations by file name, or None when the directory no longer matches (scan)."""
    try:
        st = os.fstat(dir_fd)
        with open(index_path(st), "rb") as f:
            doc = json.load(f)
        if doc["format"] != FORMAT or doc["dir"] != [st.st_dev, st.st_ino] \
                or doc["stamp"] != st.st_mtime_ns:
            return None
        out: dict[str, Owner] = {}
        for name, (container_id, ifname) in doc["reservations"].items():
            if not isinstance(container_id, str) or not isinstance(ifname, (str, type(None))):
                return None
            out[name] = Owner(container_id, ifname)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(dir_fd: int, reservations: dict[str, Owner]) -> None:
    """Best effort: a failure only costs the next call a scan."""
    stamp = time.time_ns() - STAMP_AGE_NS
    try:
        st = os.fstat(dir_fd)
        path = index_path(st)
        doc = {
            "format": FORMAT,
            "dir": [st.st_dev, st.st_ino],
            "stamp": stamp,
            "reservations": reservations,  # Owner is a tuple: [id, ifname]
        }
        temp = f"{path}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # open(temp, "w")
        try:
            fd = os.open(temp, flags, 0o666)
        except FileNotFoundError:  # the first save under this root: no makedirs every call
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(temp, flags, 0o666)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(json.dumps(doc, separators=(",", ":")))  # dumps: the C encoder
        os.replace(temp, path)
        os.utime(dir_fd, ns=(stamp, stamp))
        if os.fstat(dir_fd).st_mtime_ns != stamp:  # coarse timestamps: stamps could repeat
            os.unlink(path)
    except OSError:
        return
