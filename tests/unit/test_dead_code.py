"""No dead code: every module-level function, class and constant of cni_bridge is used.

A name defined at the top of a module is used when something in cni_bridge/ refers to it: a
name read in its own module (outside its own body), ``module.name`` through an imported module,
``from module import name`` followed by a use (re-exports are followed to the definition), a
string given to getattr/hasattr, a word in build/ (the frozen build's hooks), or the entry point
in pyproject.toml. Tests do not count: code only a test calls is dead.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.unit.test_layers import module_names

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "cni_bridge"
BUILD_DIR = REPO / "build"

Ref = tuple[str, str]  # (module, name)

# Used from outside the package on purpose (a name build/ or pyproject.toml spells is
# already seen), each with its reason.
ALLOWED: dict[Ref, str] = {}
# Dead code in other parts' files, removed by them. Removed at merge.
KNOWN: set[Ref] = set()


def definitions(tree: ast.Module) -> Iterator[tuple[str, ast.stmt]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name, node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    yield target.id, node


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class ModuleUses(ast.NodeVisitor):
    """What one module refers to: names it reads, names it binds by import, attributes of
    the package modules it imported, getattr strings."""

    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module, self.is_package, self.modules = module, is_package, modules
        self.reads: set[str] = set()
        self.bindings: dict[str, Ref] = {}  # local name -> (module, name) it was imported as
        self.module_aliases: dict[str, str] = {}  # local name -> package module
        self.refs: set[Ref] = set()
        self.strings: set[str] = set()
        self.skip: str | None = None  # the definition being read (its own name is no use)

    def visit_module(self, tree: ast.Module) -> None:
        for node in tree.body:
            own = [name for name, stmt in definitions(tree) if stmt is node]
            self.skip = own[0] if own and not isinstance(node, ast.Assign) else None
            self.visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in self.modules:
                local = alias.asname or alias.name.partition(".")[0]
                self.module_aliases[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.module.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if self.is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        if base not in self.modules:
            return
        for alias in node.names:
            local = alias.asname or alias.name
            if f"{base}.{alias.name}" in self.modules:
                self.module_aliases[local] = f"{base}.{alias.name}"
            else:
                self.bindings[local] = (base, alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id != self.skip:
            self.reads.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = dotted(node.value)
        if base is not None:
            head, _, rest = base.partition(".")
            target = self.module_aliases.get(head)
            full = f"{target}.{rest}" if target and rest else target
            if full in self.modules:
                self.refs.add((full, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            self.strings.add(node.args[1].value)
        self.generic_visit(node)


def unused(package_dir: Path, outside_words: set[str]) -> list[str]:
    """``path:line: module.name`` of every top-level definition nothing uses."""
    modules = module_names(package_dir)
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in modules.items()}
    uses = {}
    for module, tree in trees.items():
        uses[module] = ModuleUses(module, modules[module].name == "__init__.py", modules)
        uses[module].visit_module(tree)
    pending = [ref for u in uses.values() for ref in u.refs]
    pending += [(m, name) for m, u in uses.items() for name in u.reads]
    used: set[Ref] = set()
    while pending:  # follow imports to the module that defines the name
        ref = pending.pop()
        if ref in used:
            continue
        used.add(ref)
        module, name = ref
        if module in uses and name in uses[module].bindings:
            pending.append(uses[module].bindings[name])
    strings = set().union(*(u.strings for u in uses.values())) | outside_words
    dead = []
    for module, tree in trees.items():
        for name, node in definitions(tree):
            ref = (module, name)
            if (ref in used or name in strings or ref in ALLOWED or ref in KNOWN
                    or (name.startswith("__") and name.endswith("__"))):
                continue
            dead.append(f"{modules[module]}:{node.lineno}: {module}.{name}")
    return dead


def words_outside_the_package() -> set[str]:
    """Identifiers in build/ and the entry points of pyproject.toml."""
    texts = [p.read_text() for p in BUILD_DIR.rglob("*") if p.suffix in (".py", ".spec")]
    texts.append((REPO / "pyproject.toml").read_text())
    return {w for text in texts for w in re.findall(r"[A-Za-z_]\w*", text)}


def test_no_unused_definitions() -> None:
    dead = unused(PACKAGE_DIR, words_outside_the_package())
    assert not dead, "defined but used nowhere in cni_bridge/ or build/:\n" + "\n".join(dead)


def test_known_dead_code_is_still_there() -> None:
    modules = module_names(PACKAGE_DIR)
    gone = [ref for ref in KNOWN | set(ALLOWED) if ref[0] not in modules
            or ref[1] not in dict(definitions(ast.parse(modules[ref[0]].read_text())))]
    assert not gone, f"remove from KNOWN/ALLOWED: {gone}"


def test_the_finder_sees_through_imports_and_attributes(tmp_path: Path) -> None:
    package = tmp_path / "cni_bridge"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from cni_bridge.sub.a import used_via_package\n")
    (package / "sub" / "a.py").write_text(
        "LIMIT = 3\n"
        "def used_via_package(): pass\n"
        "def used_as_attribute(): pass\n"
        "def used_by_getattr(): pass\n"
        "def recursive_only(n): return recursive_only(n - 1)\n"
        "def unused_import(): pass\n"
        "def dead(): return LIMIT\n"
    )
    (package / "b.py").write_text(
        "from cni_bridge.sub import used_via_package\n"
        "from cni_bridge.sub.a import unused_import\n"
        "import cni_bridge.sub.a as a\n"
        "def main():\n"
        "    used_via_package(); a.used_as_attribute(); getattr(a, 'used_by_getattr')\n"
    )
    dead = [line.rpartition(": ")[2] for line in unused(package, {"main"})]
    assert dead == ["cni_bridge.sub.a.recursive_only", "cni_bridge.sub.a.unused_import",
                    "cni_bridge.sub.a.dead"]
