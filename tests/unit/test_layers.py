"""The package's import graph: no cycle, and no arrow from a lower room up to a higher one.

Every ``import`` counts, at the top of a module, inside a function or under TYPE_CHECKING:
a lazy import is still a dependency. ``from cni_bridge.x import y`` is an arrow to the module
``cni_bridge.x.y`` when that is a module, else to ``cni_bridge.x``. Imports by a computed
string (``importlib.import_module(name)``) are not seen: the server's preload imports the
whole package that way, on purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "cni_bridge"

# The rooms, low to high: a module imports only from its own room or lower ones. A room is
# (level, sub-level, group): within one level, a higher sub-level may import a lower one, and
# modules of the same sub-level only when they share a group (nft and iptables never meet).
FIREWALL_BASE = ("errors", "names", "model", "commands", "backend", "noop")
LAYERS: dict[str, int] = {
    "cni_bridge": 0,
    "cni_bridge.diag": 1,
    "cni_bridge.cni": 2,
    "cni_bridge.netlink": 3,
    "cni_bridge.net": 4,
    "cni_bridge.node": 5,
    "cni_bridge.firewall": 6,
    "cni_bridge.ipam": 7,
    "cni_bridge.loopback": 7,
    "cni_bridge.bridge": 8,
    "cni_bridge.portmap": 8,
    "cni_bridge.call": 9,
    "cni_bridge.calllog": 9,
    "cni_bridge.serve": 10,
    "cni_bridge.deploy": 11,
    "cni_bridge.node_agent": 12,
    "cni_bridge.admin": 13,
    "cni_bridge.entry": 14,
    "cni_bridge.__main__": 14,
}
# Inner order of a level: (module prefix, sub-level, group); the longest matching prefix wins.
INNER: list[tuple[str, int, str]] = [
    *((f"cni_bridge.firewall.{name}", 0, "base") for name in FIREWALL_BASE),
    ("cni_bridge.firewall.nft", 1, "nft"),
    ("cni_bridge.firewall.iptables", 1, "iptables"),
    ("cni_bridge.firewall", 2, "upper"),  # detect, recorded, the leftovers sweep, policy
    ("cni_bridge.serve.wire", 0, "wire"),
    ("cni_bridge.serve.client", 1, "client"),
    ("cni_bridge.serve.server", 2, "server"),
    ("cni_bridge.serve", 2, "server"),
]

# Arrows allowed against the rules, each with its reason: (importer, imported). None today.
KNOWN: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Room:
    level: int
    sub: int
    group: str

    def may_import(self, other: Room) -> bool:
        if (other.level, other.sub) != (self.level, self.sub):
            return (other.level, other.sub) < (self.level, self.sub)
        return other.group == self.group


@dataclass(frozen=True)
class Arrow:
    importer: str
    imported: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under `package_dir`, by dotted name (packages by their own)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` denotes: itself, else its longest prefix that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                   modules: dict[str, Path]) -> set[str]:
    """The package modules an import statement loads (``from a import b``: a.b if a module)."""
    if isinstance(node, ast.Import):
        return {t for alias in node.names if (t := resolve(alias.name, modules))}
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    targets = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        target = submodule if submodule in modules else resolve(base, modules)
        if target:
            targets.add(target)
    return targets


def arrows(package_dir: Path) -> Iterator[Arrow]:
    """Every import of one package module by another (once per statement and target)."""
    modules = module_names(package_dir)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = import_targets(node, module, path.name == "__init__.py", modules)
                for target in sorted(targets - {module}):
                    yield Arrow(module, target, path, node.lineno)


def room_of(module: str) -> Room | None:
    level = LAYERS.get(resolve(module, dict.fromkeys(LAYERS, Path())) or "")
    if level is None:
        return None
    for prefix, sub, group in sorted(INNER, key=lambda entry: -len(entry[0])):
        if module == prefix or module.startswith(prefix + "."):
            return Room(level, sub, group)
    return Room(level, 0, "")


def level_name(level: int) -> str:
    return next(name for name, value in LAYERS.items() if value == level)


def upward_arrows(found: list[Arrow]) -> list[str]:
    problems = []
    for arrow in found:
        src, dst = room_of(arrow.importer), room_of(arrow.imported)
        if src is None or dst is None or src.may_import(dst):
            continue
        if (arrow.importer, arrow.imported) in KNOWN:
            continue
        problems.append(
            f"{arrow.where()}: {arrow.importer} (room {src.level} {level_name(src.level)}, "
            f"{src.sub}/{src.group or '-'}) imports {arrow.imported} (room {dst.level} "
            f"{level_name(dst.level)}, {dst.sub}/{dst.group or '-'}): a module imports only from "
            f"its own room or lower ones")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def module_graph(found: list[Arrow]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for arrow in found:
        if (arrow.importer, arrow.imported) not in KNOWN:
            graph.setdefault(arrow.importer, set()).add(arrow.imported)
    return graph


def room_graph(found: list[Arrow]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for arrow in found:
        src, dst = room_of(arrow.importer), room_of(arrow.imported)
        if src and dst and src.level != dst.level and (arrow.importer, arrow.imported) not in KNOWN:
            graph.setdefault(level_name(src.level), set()).add(level_name(dst.level))
    return graph


def cycle_report(components: list[list[str]], found: list[Arrow]) -> list[str]:
    lines = []
    for component in components:
        members = set(component)
        inside = [a for a in found if a.importer in members and a.imported in members]
        lines.append("import cycle among " + ", ".join(component) + ":\n" + "\n".join(
            f"  {a.where()}: {a.importer} -> {a.imported}" for a in inside))
    return lines


@pytest.fixture(scope="module")
def package_arrows() -> list[Arrow]:
    return list(arrows(PACKAGE_DIR))


def test_every_module_has_a_room() -> None:
    # Every name falls back to the package's own entry (the lowest room): only the package
    # itself may be placed by it, any other module there was left out of LAYERS.
    homeless = [name for name in module_names(PACKAGE_DIR) if name != "cni_bridge"
                and resolve(name, dict.fromkeys(LAYERS, Path())) in (None, "cni_bridge")]
    assert not homeless, f"modules outside every room of LAYERS: {homeless}"


def test_no_import_cycle_among_modules(package_arrows: list[Arrow]) -> None:
    report = cycle_report(cycles(module_graph(package_arrows)), package_arrows)
    assert not report, "\n".join(report)


def test_no_cycle_among_rooms(package_arrows: list[Arrow]) -> None:
    found = cycles(room_graph(package_arrows))
    assert not found, f"rooms import each other: {found}"


def test_no_arrow_up(package_arrows: list[Arrow]) -> None:
    problems = upward_arrows(package_arrows)
    assert not problems, "\n".join(problems)


def test_known_violations_still_exist(package_arrows: list[Arrow]) -> None:
    present = {(a.importer, a.imported) for a in package_arrows}
    assert not KNOWN - present, f"fixed: remove from KNOWN: {sorted(KNOWN - present)}"


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "cni_bridge"


def test_the_checks_catch_a_cycle_and_an_arrow_up(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "cni_bridge/__init__.py": "",
        "cni_bridge/cni/__init__.py": "",
        "cni_bridge/cni/errors.py": "def f():\n    from cni_bridge.admin import main\n",
        "cni_bridge/admin/__init__.py": "",
        "cni_bridge/admin/main.py": "from cni_bridge.cni import errors\n",
        "cni_bridge/firewall/__init__.py": "",
        "cni_bridge/firewall/nft/__init__.py": "",
        "cni_bridge/firewall/nft/plan.py": "from ..iptables import save\n",
        "cni_bridge/firewall/iptables/__init__.py": "",
        "cni_bridge/firewall/iptables/save.py": "import cni_bridge.firewall.model\n",
        "cni_bridge/firewall/model.py": "x = 1\n",
    })
    found = list(arrows(package))
    assert {(a.importer, a.imported) for a in found} == {
        ("cni_bridge.cni.errors", "cni_bridge.admin.main"),
        ("cni_bridge.admin.main", "cni_bridge.cni.errors"),
        ("cni_bridge.firewall.nft.plan", "cni_bridge.firewall.iptables.save"),
        ("cni_bridge.firewall.iptables.save", "cni_bridge.firewall.model"),
    }
    assert cycles(module_graph(found)) == [["cni_bridge.admin.main", "cni_bridge.cni.errors"]]
    assert cycles(room_graph(found)) == [["cni_bridge.admin", "cni_bridge.cni"]]
    problems = upward_arrows(found)
    assert len(problems) == 2
    assert problems[0].startswith(f"{package}/cni/errors.py:2: cni_bridge.cni.errors (room 2")
    assert "imports cni_bridge.admin.main (room 13" in problems[0]
    assert "firewall/nft/plan.py:1: cni_bridge.firewall.nft.plan" in problems[1]
