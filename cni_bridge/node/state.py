"""Whose is a namespace's state directory, and removing the state of namespaces that are gone.

``netns-<inode>/`` holds an owner file: cookie and boot id (the kernel reuses inodes, never a
cookie within a boot). Proof of a dead owner: another boot id; another cookie at the caller's
own inode; another cookie than the live namespace's that now has the inode (/proc, nsfs
mounts). Anything else is left alone and said so (no visible namespace has the inode, no owner
file, no cookie before 5.14); at the caller's own inode it is adopted, as before owner files.
Stale state is renamed aside under the state root's lock, rechecked, then removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from cni_bridge.diag import logger
from cni_bridge.node import owner as nodeowner

log = logger(__name__)

STALE_PREFIX = ".stale-"  # moved aside, being removed
NEW_PREFIX = ".new-"  # being made: renamed into place with its owner file in it
_NAMESPACE_DIR = re.compile(r"netns-(\d+)")

OWN = "own"  # the caller's, or (another inode) the live namespace's that has that inode
DEAD = "dead"
UNPROVEN = "unproven"


class Owner(NamedTuple):
    cookie: int | None  # None: the kernel had no SO_NETNS_COOKIE
    boot_id: str


def parse_owner(text: str | None) -> Owner | None:
    """An owner file's content; None when missing or damaged."""
    fields = dict(line.split(" ", 1) for line in (text or "").splitlines() if " " in line)
    cookie, boot_id = fields.get("netns-cookie", ""), fields.get("boot-id", "").strip()
    if not boot_id or not (cookie == "unavailable" or cookie.isdigit()):
        return None
    return Owner(None if cookie == "unavailable" else int(cookie), boot_id)


def judge_own_inode(found: Owner | None, mine: Owner) -> str:
    """The directory at the caller's own inode: OWN, DEAD or UNPROVEN."""
    if found == mine:
        return OWN
    if found is None:
        return UNPROVEN
    if found.boot_id != mine.boot_id:
        return DEAD
    if found.cookie is None or mine.cookie is None:
        return UNPROVEN
    return DEAD  # another cookie at our inode: its namespace is gone


def judge_other_inode(found: Owner | None, boot_id: str, live_cookie: int | None,
                      live: bool) -> str:
    """`live` False: no namespace this process can see has that inode now."""
    if found is None:
        return UNPROVEN
    if found.boot_id != boot_id:
        return DEAD
    if not live or live_cookie is None or found.cookie is None:
        return UNPROVEN
    return OWN if found.cookie == live_cookie else DEAD


def claim(root: str, mine: str) -> None:
    """Make `root` the caller's: create it, adopt it when its owner cannot be judged, or move
    a dead owner's aside first (under the state root's lock: a racing claim finds ours)."""
    base, name = os.path.split(root)
    os.makedirs(base, mode=0o700, exist_ok=True)
    aside = None
    with _locked(base):
        text = nodeowner.read_small(os.path.join(root, nodeowner.OWNER_FILE))
        if text == mine:
            return
        if os.path.lexists(root):
            verdict = judge_own_inode(parse_owner(text), _owner(mine))
            if verdict != DEAD and os.path.isdir(root) and not os.path.islink(root):
                _write_owner(root, mine)  # adopted (see the module's doc)
                return
            aside = _move_aside(base, name)
        _create(base, name, mine)
    if aside:
        log.info("%s belonged to a network namespace that is gone (%s); removed", root,
                 describe(parse_owner(text)))
        _remove(aside)


def _owner(text: str) -> Owner:
    owner = parse_owner(text)
    assert owner is not None, text
    return owner


def _create(base: str, name: str, mine: str) -> None:
    temp = os.path.join(base, f"{NEW_PREFIX}{name}-{os.urandom(4).hex()}")
    os.mkdir(temp, 0o700)
    _write_owner(temp, mine)
    try:
        os.rename(temp, os.path.join(base, name))
    except OSError:  # made meanwhile without the lock (a version before owner files)
        _write_owner(os.path.join(base, name), mine)
        _remove(temp)


def _write_owner(directory: str, text: str) -> None:
    temp = os.path.join(directory, f"{nodeowner.TEMP_PREFIX}owner-{os.urandom(4).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(temp, os.path.join(directory, nodeowner.OWNER_FILE))


@contextlib.contextmanager
def _locked(base: str) -> Iterator[None]:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move_aside(base: str, name: str) -> str:
    aside = os.path.join(base, f"{STALE_PREFIX}{name}-{os.urandom(4).hex()}")
    os.rename(os.path.join(base, name), aside)
    return aside


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def describe(owner: Owner | None) -> str:
    if owner is None:
        return "no owner file"
    cookie = "no cookie" if owner.cookie is None else f"netns cookie {owner.cookie}"
    return f"{cookie}, boot {owner.boot_id}"


@dataclass(frozen=True)
class Found:
    path: str
    owner: str  # as `describe` says it
    why: str


@dataclass
class Survey:
    """The state root's namespace directories that are not (provably) their live owner's."""

    dead: list[Found] = field(default_factory=list)
    unproven: list[Found] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # moved aside or half made, not removed
    removed: list[str] = field(default_factory=list)  # by `sweep`


def survey(base: str) -> Survey:
    """Judge every namespace directory under `base`; change nothing."""
    out = Survey()
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return out
    me = _owner(nodeowner.current_owner())
    own_inode = os.stat("/proc/self/ns/net").st_ino
    live: dict[int, str] | None = None  # scanned once, when first needed
    for entry in entries:
        if entry.name.startswith((STALE_PREFIX, NEW_PREFIX)):
            out.leftovers.append(entry.path)
            continue
        match = _NAMESPACE_DIR.fullmatch(entry.name)
        if not match:
            continue
        found = parse_owner(nodeowner.read_small(os.path.join(entry.path, nodeowner.OWNER_FILE)))
        inode = int(match[1])
        if inode != own_inode and live is None and found and found.boot_id == me.boot_id:
            live = live_namespaces()  # only when needed: a scan of /proc
        verdict, why = _judge(found, me, inode == own_inode, (live or {}).get(inode))
        if verdict != OWN:
            (out.dead if verdict == DEAD else out.unproven).append(
                Found(entry.path, describe(found), why))
    return out


def _judge(found: Owner | None, me: Owner, own_inode: bool,
           holder: str | None) -> tuple[str, str]:
    """A directory's verdict and why; `holder` opens the live namespace with its inode."""
    if found is None:
        return UNPROVEN, "no owner file (written before owner files) or a damaged one"
    if found.boot_id != me.boot_id:
        return DEAD, "written in an earlier boot"
    if own_inode:
        verdict = judge_own_inode(found, me)
        return verdict, ("this namespace's inode, another namespace's cookie" if verdict == DEAD
                         else "no cookie to compare (kernel before 5.14)")
    if holder is None:
        return UNPROVEN, "no namespace this process can see has its inode"
    cookie = cookie_of(holder)
    verdict = judge_other_inode(found, me.boot_id, cookie, live=True)
    return verdict, (f"its inode is now another namespace's ({holder}, cookie {cookie})"
                     if verdict == DEAD else "no cookie to compare (kernel before 5.14)")


def sweep(base: str) -> Survey:
    """Survey, then remove dead namespaces' directories and leftovers (rechecked under the
    lock: one claimed meanwhile stays)."""
    report = survey(base)
    doomed: list[str] = []
    with contextlib.suppress(OSError), _locked(base):
        for found in report.dead:
            owner = nodeowner.read_small(os.path.join(found.path, nodeowner.OWNER_FILE))
            if describe(parse_owner(owner)) == found.owner:  # not claimed meanwhile
                doomed.append(_move_aside(base, os.path.basename(found.path)))
                report.removed.append(found.path)
        doomed += [p for p in report.leftovers if os.path.basename(p).startswith(STALE_PREFIX)
                   or _older_than(p, 60.0)]
    for path in doomed:
        _remove(path)
    return report


def _older_than(path: str, seconds: float) -> bool:
    import time

    try:
        return os.lstat(path).st_mtime < time.time() - seconds
    except OSError:
        return False


def sweep_logged(base: str | None = None) -> None:
    """`sweep` for the resident server: logged, and a failure never stops the caller."""
    try:
        report = sweep(base or nodeowner.state_base())
    except Exception as exc:
        log.warning("cannot sweep the state of dead namespaces: %s", exc)
        return
    for path in report.removed:
        log.info("removed %s: its network namespace is gone", path)


def live_namespaces() -> dict[int, str]:
    """Inode -> a path opening that live namespace: every process's and visible nsfs mount."""
    out: dict[int, str] = {}
    for path in _nsfs_mounts():
        _add_inode(out, path)
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                _add_inode(out, f"/proc/{pid}/ns/net")
    return out


def _add_inode(out: dict[int, str], path: str) -> None:
    with contextlib.suppress(OSError):  # gone meanwhile, or not one we may look at
        out.setdefault(os.stat(path).st_ino, path)


def _nsfs_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields, _, tail = line.partition(" - ")
        if tail.startswith("nsfs ") and len(fields.split()) > 4:
            out.append(_unescape(fields.split()[4]))
    return out


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), path)


def cookie_of(path: str) -> int | None:
    """Entered by this thread only, briefly; None when not enterable or no cookie."""
    from cni_bridge.cni.errors import CniError
    from cni_bridge.net.netns import enter_netns, open_netns

    try:
        with open_netns(path) as handle, enter_netns(handle):
            return nodeowner.netns_cookie()
    except CniError:
        return None
