"""Where the plugins are, and ``cni-bridge install``: putting them into a CNI bin directory.

Copying the frozen bundle over a live ``/opt/cni/bin`` file by file would let a runtime start a
new executable with half-old libraries, so the install is two atomic steps: the whole bundle,
fsynced, renamed into ``<bin-dir>/.cni-bridge-<version>-<digest>/`` (an identical one is
reused); then each role's symlink into it renamed over the old entry. The previous bundle is
kept (a plugin started just before may still load from it); older ones are removed.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cni_bridge import PLUGIN_ROLES, __version__
from cni_bridge.deploy.defaults import DEFAULT_CONFLIST

EXECUTABLE = "cni-bridge"
BUNDLE_PREFIX = ".cni-bridge-"
DEFAULT_CONF_NAME = "10-cni-bridge.conflist"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the source tree holding cni_bridge/

LAUNCHER = """#!{python}
# cni-bridge from source: the role comes from this file's name.
import sys
sys.path.insert(0, {root!r})
from cni_bridge.entry import main
main()
"""


class InstallError(Exception):
    """The install cannot go ahead; the message says what to do."""


def frozen_dir() -> Path | None:
    """The directory of the frozen executable, or None when running from source."""
    return Path(sys.executable).resolve().parent if getattr(sys, "frozen", False) else None


def self_command() -> list[str]:
    """How to run this program again (for helpers started inside namespaces)."""
    if frozen_dir() is not None:
        return [sys.executable]
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
            "from cni_bridge.entry import main; main(['cni-bridge', *sys.argv[1:]])"]


def write_launchers(directory: Path) -> None:
    """Executables named after the roles that run this source tree."""
    for role in (*PLUGIN_ROLES, EXECUTABLE):
        path = directory / role
        path.write_text(LAUNCHER.format(python=sys.executable, root=str(REPO_ROOT)))
        path.chmod(0o755)


_launcher_dir: Path | None = None


def default_plugin_dir() -> Path:
    """Where this program's own plugins are: next to the frozen executable, else launchers in a
    temporary directory (removed at exit)."""
    global _launcher_dir
    frozen = frozen_dir()
    if frozen is not None:
        return frozen
    if _launcher_dir is None:
        _launcher_dir = Path(tempfile.mkdtemp(prefix="cni-bridge-plugins-"))
        atexit.register(shutil.rmtree, _launcher_dir, True)
        write_launchers(_launcher_dir)
    return _launcher_dir


@dataclass
class InstallReport:
    bundle: Path
    reused: bool
    linked: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # entries that were not our symlinks
    removed: list[Path] = field(default_factory=list)  # old bundles


def bundle_entries(source: Path) -> list[Path]:
    """Every file, symlink and directory of the bundle, relative, parents first."""
    found = []
    for root, dirs, files in os.walk(source):
        dirs.sort()
        base = Path(root).relative_to(source)
        found += [base / name for name in dirs + sorted(files)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def bundle_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for rel in bundle_entries(source):
        path = source / rel
        digest.update(str(rel).encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(b"F%o" % (path.stat().st_mode & 0o777))
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def check_source(source: Path) -> None:
    exe = source / EXECUTABLE
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise InstallError(
            f"{source} holds no {EXECUTABLE} executable; build the frozen bundle first "
            "(build/build.sh) and run dist/cni/cni-bridge install, or pass --from DIR")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(directory: Path) -> None:
    """Fail before anything is written when `directory` (or the ancestor it would be created
    in) refuses a new file."""
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a directory")
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".cni-bridge-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "" if probe == directory else f" (it would be created in {probe})"
        raise InstallError(f"cannot write to {directory}: {exc.strerror or exc}{where}; "
                           "nothing was installed") from None


def copy_bundle(source: Path, dest: Path) -> None:
    """Copy the tree with every file fsynced (symlinks stay symlinks)."""
    dest.mkdir(mode=0o755)
    for rel in bundle_entries(source):
        src, dst = source / rel, dest / rel
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            dst.mkdir(mode=0o755)
        else:
            with open(src, "rb") as fin, open(dst, "xb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.chmod(dst, src.stat().st_mode & 0o777)
    for directory in sorted({(dest / rel).parent for rel in bundle_entries(source)}, reverse=True):
        fsync_dir(directory)


def _bundle_of(link: Path) -> str | None:
    """The bundle directory name a symlink of ours points into, if it is one."""
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    first = target.parts[0] if target.parts else ""
    return first if first.startswith(BUNDLE_PREFIX) else None


def switch_link(bin_dir: Path, name: str, target: str) -> bool:
    """Point bin_dir/name at target atomically; True if it replaced something not ours."""
    path = bin_dir / name
    if path.is_dir() and not path.is_symlink():
        raise InstallError(f"{path} is a directory; remove it and run install again")
    foreign = path.exists() and _bundle_of(path) is None
    tmp = bin_dir / f".{name}.new-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)
    return foreign


def install(source: Path, bin_dir: Path, version: str = __version__) -> InstallReport:
    check_source(source)
    check_writable(bin_dir)
    bin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    name = f"{BUNDLE_PREFIX}{version}-{bundle_digest(source)}"
    bundle = bin_dir / name
    previous = _bundle_of(bin_dir / PLUGIN_ROLES[0])
    report = InstallReport(bundle, reused=bundle.is_dir())
    if not report.reused:
        tmp = bin_dir / f"{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            copy_bundle(source, tmp)
            os.rename(tmp, bundle)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(bin_dir)
    for role in (*PLUGIN_ROLES, EXECUTABLE):
        if switch_link(bin_dir, role, f"{name}/{EXECUTABLE}"):
            report.replaced.append(role)
        report.linked.append(role)
    fsync_dir(bin_dir)
    for old in sorted(bin_dir.glob(f"{BUNDLE_PREFIX}*")):
        if old.is_dir() and old.name not in (name, previous) and ".tmp-" not in old.name:
            shutil.rmtree(old)
            report.removed.append(old)
    return report


def synced_temp_file(directory: Path, text: str) -> str:
    """A new temporary file in `directory` holding `text`, fsynced, mode 0644; its path."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_default_conf(conf_dir: Path) -> tuple[Path, bool]:
    """Write the default conflist unless the file exists; returns (path, written)."""
    path = conf_dir / DEFAULT_CONF_NAME
    if path.exists():
        return path, False
    conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = synced_temp_file(conf_dir, json.dumps(DEFAULT_CONFLIST, indent=2) + "\n")
    try:
        os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite
    except FileExistsError:
        return path, False
    finally:
        os.unlink(tmp)
    fsync_dir(conf_dir)
    return path, True
