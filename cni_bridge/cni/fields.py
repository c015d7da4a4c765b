"""Typed readers for config fields; each error names the key and value, so plugin config
modules stay declarative."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cni_bridge.cni.errors import ConfigError


def _get(obj: Mapping[str, Any], key: str, default: Any, fits: Callable[[Any], bool], kind: str,
         where: str, cap: int | None = None) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not fits(value):
        raise ConfigError(f"{where}{key} must be {kind}", f"got {value!r}"[:cap])
    return value


def get_bool(obj: Mapping[str, Any], key: str, default: bool = False, where: str = "") -> bool:
    return bool(_get(obj, key, default, lambda v: isinstance(v, bool), "true or false", where))


def get_int(obj: Mapping[str, Any], key: str, default: int = 0, lo: int | None = None,
            hi: int | None = None, where: str = "") -> int:
    value: int = _get(obj, key, default, lambda v: isinstance(v, int) and not isinstance(v, bool),
                      "an integer", where)
    out_of_range = (lo is not None and value < lo) or (hi is not None and value > hi)
    if obj.get(key) is not None and out_of_range:
        raise ConfigError(f"{where}{key} is out of range [{lo}, {hi}]", f"got {value}")
    return value


def get_str(obj: Mapping[str, Any], key: str, default: str = "", where: str = "") -> str:
    return str(_get(obj, key, default, lambda v: isinstance(v, str), "a string", where))


def get_obj(obj: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value: Mapping[str, Any] = _get(obj, key, {}, lambda v: isinstance(v, Mapping),
                                    "a JSON object", where, 200)
    return value


def get_list(obj: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
    value: list[Any] = _get(obj, key, [], lambda v: isinstance(v, list), "a JSON list", where, 200)
    return value
