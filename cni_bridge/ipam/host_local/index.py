"""A cache of one store's reservations, so a call need not read every reservation file.

Reading who holds what means opening every file of ``<dataDir>/<network>/`` (the reference does
that on every ADD, DEL and CHECK): about 10 µs a file, 10 ms at 1,000 containers. This index
keeps the decoded reservations beside our other state, outside the store, whose files stay
exactly the reference's. It is only ever a cache: a missing, damaged or stale index is rebuilt
from a full scan of the directory.

Staleness is detected without listing the directory. At the end of each locked session that
wrote the index, the store directory's mtime is set to a stamp recorded in the index: the time
two seconds ago, to the nanosecond. Every creation or removal of a file in the directory, by us
or by anyone else (the reference plugin, an operator), makes the kernel set the mtime to the
current time, which can never equal the stamp; and no two sessions write the same stamp, so an
index written under another state root (see below) never matches either. So "directory mtime ==
stamp" means the set of files is exactly the one indexed. Writers of either implementation
create and remove reservation files, never rewrite them in place, which is what makes the file
set enough. A filesystem that cannot keep the stamp to the nanosecond gets no index (the stamp
read back differs, so the index is removed): every call scans, as the reference does. A store
directory removed and made again may get the old one's inode number, and so its index's name:
its mtime, set when it was made, is later than the old stamp and never equals it.

The index of a store is a JSON file ``<state root>/ipam-index/<st_dev>-<st_ino>.index`` (state
root: ``CNI_BRIDGE_STATE_DIR`` or ``/run/cni-bridge``; a tmpfs, so a reboot means one scan).
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
    """The reservations (by file name) as last indexed, or None when there is no index the
    directory still matches (then the caller scans). Names are taken as written: only this
    module writes them, from the store's own names."""
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
    """Write the index, then stamp the directory. Best effort: a failure only costs the next
    call a scan (it finds no index, or one whose stamp the directory does not carry)."""
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
