"""Build step: record the import-time work of cni-bridge that is the same on every start.

Every plugin call is a new process, and before doing anything useful it imports its modules.
Three stdlib mechanisms redo the same work at import time on every start:

- ``@dataclass`` generates ``__init__``/``__repr__``/``__eq__``/``__hash__``/``__setattr__``... as
  source text and ``exec``s it: about 300 ``compile()`` calls for a bridge ADD, 40% of its import
  time (``python -X importtime`` and a timer around ``dataclasses._process_class``);
- for a class without a docstring, ``@dataclass`` writes ``inspect.signature(cls)`` into its
  ``__doc__``; ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``...) for
  that alone, 10% of the import time;
- ``re.compile`` at module level parses and compiles each pattern (pure Python).

This script imports every module of the package (and the pyroute2 message classes) with the three
recorded, and writes a marshal file: {source text: code object}, {(pattern, flags): arguments of
``_sre.compile``} and {class key: signature text}, the first two with each value marshalled on its
own so that only what is used gets unmarshalled. The run-time hook
``rthooks/pyi_rth_cni_bridge_startup.py`` serves them. Lookups are by exact input, so a hit is what
computing would have produced; anything else is computed as usual.

Before writing, it checks that: each recorded code object equals ``compile()`` of its text; each
recorded pattern equals the pattern ``re`` compiles (``Pattern.__eq__`` compares the compiled
code); and a fresh interpreter running the hook gives every dataclass the same ``__doc__`` and
methods as one without it. Any difference fails the build.

Usage: python build/startup_cache.py OUTPUT   (run by cni-bridge.spec with the build interpreter)
"""

from __future__ import annotations

import builtins
import importlib
import json
import marshal
import os
import pkgutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "rthooks" / "pyi_rth_cni_bridge_startup.py"
FORMAT = 2
CACHE_NAME = "cni_bridge_startup.marshal"


def _hook_namespace() -> dict[str, Any]:
    """The hook's module namespace (for _signature_key); the hook only registers install()."""
    source = HOOK.read_text()
    namespace: dict[str, Any] = {"__name__": "startup_hook"}
    exec(compile(source, str(HOOK), "exec"), namespace)
    return namespace


def record_regexes(table: dict[tuple[Any, int], tuple[Any, ...]]) -> Any:
    """Wrap ``re._compiler.compile`` so the arguments it hands ``_sre.compile`` are kept.
    Returns the original function."""
    import _sre  # type: ignore[import-not-found]
    from re import _compiler  # type: ignore[attr-defined]

    original = _compiler.compile
    captured: list[tuple[Any, ...]] = []
    spy = types.SimpleNamespace(**{n: getattr(_sre, n) for n in dir(_sre)
                                   if not n.startswith("__")})

    def spy_compile(pattern: Any, flags: int, code: list[int], groups: int,
                    groupindex: dict[str, int], indexgroup: tuple[Any, ...]) -> Any:
        # The opcodes are int subclasses (re._constants._NamedIntConstant), which marshal
        # refuses; _sre reads each as a C integer, so plain ints are the same program.
        captured.append((pattern, int(flags), [int(c) for c in code], int(groups),
                         dict(groupindex), tuple(indexgroup)))
        return _sre.compile(pattern, flags, code, groups, groupindex, indexgroup)

    spy.compile = spy_compile

    def compile(p: Any, flags: int = 0) -> Any:
        captured.clear()
        _compiler._sre = spy
        try:
            pattern = original(p, flags)
        finally:
            _compiler._sre = _sre
        if isinstance(p, (str, bytes)) and len(captured) == 1 and type(flags) is int:
            table[(p, flags)] = captured[0]
        return pattern

    _compiler.compile = compile
    return original


def record_dataclasses(codes: dict[str, types.CodeType], signatures: dict[Any, str]) -> None:
    """Give ``dataclasses`` an ``exec`` and an ``inspect`` that keep what they compute."""
    import dataclasses
    import inspect

    def exec_recorded(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            # As dataclasses' own exec(source) would: no __future__ flags inherited from here.
            code = compile(source, "<string>", "exec", dont_inherit=True)
            codes[source] = code
            source = code
        if globals is None:  # a bare exec() runs in its caller's namespaces
            caller = sys._getframe(1)
            globals = caller.f_globals
            if locals is None:
                locals = caller.f_locals
        builtins.exec(source, globals, locals)

    key_of = _hook_namespace()["_signature_key"]

    class Inspect:
        def signature(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
            sig = inspect.signature(obj, *args, **kwargs)
            key = key_of(obj) if not args and not kwargs else None
            if key is not None:
                signatures[key] = str(sig)
            return sig

        def __getattr__(self, name: str) -> Any:
            return getattr(inspect, name)

    dataclasses.exec = exec_recorded  # type: ignore[attr-defined]
    dataclasses.inspect = Inspect()  # type: ignore[attr-defined]


def import_everything() -> None:
    sys.path.insert(0, str(REPO))
    import cni_bridge

    for info in pkgutil.walk_packages(cni_bridge.__path__, "cni_bridge."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    from cni_bridge.net import _codec

    _codec.codec()  # the pyroute2 message classes, behind their package stub


def _code_fingerprint(code: types.CodeType) -> list[Any]:
    consts = [_code_fingerprint(c) if isinstance(c, types.CodeType) else repr(c)
              for c in code.co_consts]
    return [code.co_code.hex(), consts, code.co_names, code.co_varnames, code.co_argcount,
            code.co_kwonlyargcount, code.co_flags, code.co_qualname, code.co_filename]


def fingerprint() -> dict[str, Any]:
    """Every dataclass of ours and pyroute2's: its __doc__ and its generated methods."""
    out: dict[str, Any] = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith(("cni_bridge", "pyroute2")) or module is None:
            continue
        for obj in list(vars(module).values()):
            if not isinstance(obj, type) or obj.__module__ != name \
                    or "__dataclass_fields__" not in obj.__dict__:
                continue
            methods = {m: _code_fingerprint(f.__code__) for m, f in sorted(vars(obj).items())
                       if isinstance(f, types.FunctionType)
                       and f.__code__.co_filename == "<string>"}
            out[f"{name}.{obj.__qualname__}"] = {"doc": obj.__doc__, "methods": methods}
    return out


def run_child(cache: Path | None) -> dict[str, Any]:
    """Import everything in a fresh interpreter, with the hook serving `cache` or without it."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-I", str(Path(__file__).resolve()), "--fingerprint"]
    if cache is not None:
        argv.append(str(cache))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def child(cache: str | None) -> int:
    if cache is not None:
        sys._MEIPASS = str(Path(cache).parent)  # type: ignore[attr-defined]
        exec(compile(HOOK.read_text(), str(HOOK), "exec"), {"__name__": "startup_hook"})
        sys.modules["_cni_bridge_startup_cache"].install()  # as cni_bridge.entry does
    import_everything()
    json.dump({"classes": fingerprint(), "inspect_imported": "inspect" in sys.modules}, sys.stdout)
    return 0


def check_entries(original_compile: Any, codes: dict[str, types.CodeType],
                  regexes: dict[tuple[Any, int], tuple[Any, ...]]) -> list[str]:
    import _sre

    errors = []
    for text, code in codes.items():
        if marshal.loads(marshal.dumps(code)) != compile(text, "<string>", "exec",
                                                          dont_inherit=True):
            errors.append(f"code differs for {text[:80]!r}")
    for (pattern, flags), args in regexes.items():
        if _sre.compile(*marshal.loads(marshal.dumps(args))) != original_compile(pattern, flags):
            errors.append(f"pattern differs: {pattern!r} flags {flags}")
    return errors


def main() -> int:
    if sys.argv[1:2] == ["--fingerprint"]:
        return child(sys.argv[2] if len(sys.argv) > 2 else None)
    out = Path(sys.argv[1])
    if out.name != CACHE_NAME:
        print(f"startup_cache.py: the output must be called {CACHE_NAME}", file=sys.stderr)
        return 2
    regexes: dict[tuple[Any, int], tuple[Any, ...]] = {}
    codes: dict[str, types.CodeType] = {}
    signatures: dict[Any, str] = {}
    original_compile = record_regexes(regexes)
    record_dataclasses(codes, signatures)
    import_everything()
    out.write_bytes(marshal.dumps((
        FORMAT, sys.version,
        {text: marshal.dumps(code) for text, code in codes.items()},
        {key: marshal.dumps(args) for key, args in regexes.items()},
        signatures,
    )))
    errors = check_entries(original_compile, codes, regexes)
    with_hook, without = run_child(out), run_child(None)
    if with_hook["classes"] != without["classes"]:
        differ = [k for k in without["classes"]
                  if with_hook["classes"].get(k) != without["classes"][k]]
        errors.append(f"classes differ with the hook: {differ[:5]}")
    if errors:
        out.unlink()
        print("startup_cache.py: the cache would change behaviour:\n  " + "\n  ".join(errors),
              file=sys.stderr)
        return 1
    print(f"startup_cache.py: {out}: {len(codes)} dataclass methods, {len(regexes)} patterns, "
          f"{len(signatures)} signatures, {out.stat().st_size // 1024} KiB; checked against "
          f"{len(without['classes'])} dataclasses; inspect imported with the hook: "
          f"{with_hook['inspect_imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
