"""Typed readers for config fields; each error names the key and value, so plugin config
modules stay declarative."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cni_bridge.cni.errors import ConfigError


def get_bool(obj: Mapping[str, Any], key: str, default: bool = False, where: str = "") -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}{key} must be true or false", f"got {value!r}")
    return value


def get_int(
    obj: Mapping[str, Any], key: str, default: int = 0, lo: int | None = None,
    hi: int | None = None, where: str = "",
) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key} must be an integer", f"got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}{key} is out of range [{lo}, {hi}]", f"got {value}")
    return value


def get_str(obj: Mapping[str, Any], key: str, default: str = "", where: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{where}{key} must be a string", f"got {value!r}")
    return value


def get_obj(obj: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key} must be a JSON object", f"got {value!r}"[:200])
    return value


def get_list(obj: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}{key} must be a JSON list", f"got {value!r}"[:200])
    return value
