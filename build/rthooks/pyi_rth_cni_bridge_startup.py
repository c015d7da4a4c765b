"""PyInstaller run-time hook: serve import-time work from the file made at build time.

``build/startup_cache.py`` recorded, at build time, what importing our modules computes the same
way on every start:

- the code objects ``@dataclass`` compiles from the source text it generates;
- the arguments ``re`` hands ``_sre.compile`` for each (pattern, flags);
- the text of ``inspect.signature(cls)`` that ``@dataclass`` puts in the ``__doc__`` of a class
  without a docstring, keyed by the class's name and its generated ``__init__`` (code,
  annotations, defaults). This is the only use ``dataclasses`` makes of ``inspect``, so
  ``inspect`` (with ``ast``, ``dis``, ``tokenize``...) is no longer imported at start-up.

The hook itself only registers ``install()`` as module ``_cni_bridge_startup_cache``:
``cni_bridge.entry`` calls it before the first import of ``re`` or ``dataclasses``, on the paths
that need them (a VERSION call never loads the file). Once installed, each of the three looks
its input up in that file first. A hit returns exactly what the computation would have
returned (same text, pattern and flags, or class; same interpreter: the file records
``sys.version`` and is ignored on a mismatch); a miss computes as usual. The build checks that
both ways give the same classes and patterns (``startup_cache.py --check``).
"""


def _signature_key(cls):  # type: ignore[no-untyped-def]
    """What inspect.signature(cls) depends on, for a plain class with a generated __init__.
    (Same function in build/startup_cache.py; None: not cacheable.)"""
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or type(cls) is not type or "__new__" in cls.__dict__ \
            or getattr(cls, "__signature__", None) is not None:
        return None
    return (cls.__module__, cls.__qualname__, code.co_code, code.co_varnames, code.co_argcount,
            code.co_kwonlyargcount, repr(init.__annotations__), repr(init.__defaults__),
            repr(init.__kwdefaults__))


def _install() -> None:
    import marshal
    import os
    import sys

    path = os.path.join(getattr(sys, "_MEIPASS", ""), "cni_bridge_startup.marshal")
    try:
        with open(path, "rb") as f:
            fmt, version, codes, regexes, signatures = marshal.load(f)
    except (OSError, ValueError, EOFError, TypeError):
        return
    if fmt != 2 or version != sys.version:
        return

    # Regular expressions first: what dataclasses imports compiles some.
    import _sre
    from re import _compiler

    original_compile = _compiler.compile

    def compile(p, flags=0):  # type: ignore[no-untyped-def]
        if type(flags) is int and isinstance(p, (str, bytes)):
            blob = regexes.get((p, flags))
            if blob is not None:
                args = marshal.loads(blob)
                if type(args[0]) is type(p):
                    return _sre.compile(*args)
        return original_compile(p, flags)

    _compiler.compile = compile

    # dataclasses without inspect: its `import inspect` gets a placeholder (its other imports
    # are done first, so nothing else can see it), then a stand-in that answers signature()
    # from the file and imports the real module for anything else.
    import _thread  # noqa: F401
    import abc  # noqa: F401
    import builtins
    import copy  # noqa: F401
    import functools  # noqa: F401
    import itertools  # noqa: F401
    import keyword  # noqa: F401
    import types

    placeholder = types.ModuleType("inspect")
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = placeholder
    try:
        import dataclasses
    finally:
        if sys.modules.get("inspect") is placeholder:
            del sys.modules["inspect"]

    class _Inspect:
        def signature(self, obj, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not args and not kwargs:
                key = _signature_key(obj)
                text = signatures.get(key) if key is not None else None
                if text is not None:
                    return text  # the caller only takes str() of it
            import inspect

            return inspect.signature(obj, *args, **kwargs)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            import inspect

            return getattr(inspect, name)

    dataclasses.inspect = _Inspect()

    exec_ = builtins.exec

    def exec_cached(source, globals=None, locals=None):  # type: ignore[no-untyped-def]
        if type(source) is str:
            blob = codes.get(source)
            if blob is not None:
                source = marshal.loads(blob)
        if globals is None:  # a bare exec() runs in its caller's namespaces
            caller = sys._getframe(1)
            globals = caller.f_globals
            if locals is None:
                locals = caller.f_locals
        exec_(source, globals, locals)

    dataclasses.exec = exec_cached  # dataclasses' only exec() is the one compiling methods


def _collect_later() -> None:
    """No cyclic garbage collection during start-up: the imports allocate ~100,000 objects
    that live as long as the process, and the collector walks them again and again (~8% of a
    plugin call's CPU time). A plugin call is over in well under a second; the operator CLI,
    which may run for long (demo, reconcile), turns collection back on (cli.main)."""
    import gc

    gc.disable()


def _register() -> None:
    import sys

    # type(sys) is the module type: `types` would be one more import on every call. cli calls
    # install() at most once per process.
    module = type(sys)("_cni_bridge_startup_cache")
    module.install = _install  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


_collect_later()
_register()
del _register, _collect_later
