"""CNI error codes and the one exception type every layer raises (subclasses fix the code).
Other exceptions are translated into CniError at the boundary of the layer that meets them;
anything left over becomes code 999 in the dispatcher.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# Error codes from the CNI spec (SPEC.md "Error codes") plus libcni's conventions.
INCOMPATIBLE_VERSION = 1
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
INTERNAL = 999


class CniError(Exception):
    """An error that is reported to the runtime as ``{"code", "msg", "details"}``."""

    code: int = INTERNAL

    def __init__(self, msg: str, details: str = "", code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        # libcni's error type carries no cniVersion; details is omitted when empty.
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self) -> str:
        return go_json(self.to_dict())

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class VersionError(CniError):
    code = INCOMPATIBLE_VERSION


class EnvError(CniError):
    code = INVALID_ENV


class DecodeError(CniError):
    code = DECODING_FAILURE


class ConfigError(CniError):
    code = INVALID_NETWORK_CONFIG


class TryAgainError(CniError):
    code = TRY_AGAIN_LATER


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (close enough for the ASCII text found in versions and args)."""
    return json.dumps(text)


def go_quote_list(items: Iterable[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


_GO_ESCAPES = {
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def go_json(obj: Any, sort_keys: bool = False) -> str:
    """JSON text as Go's ``json.MarshalIndent(v, "", "    ")`` writes it: raw UTF-8, HTML
    characters escaped, a lone surrogate (undecodable env bytes) as U+FFFD."""
    text = json.dumps(obj, indent=4, sort_keys=sort_keys, ensure_ascii=False)
    text = _SURROGATE_RE.sub("\ufffd", text)
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group()], text)
