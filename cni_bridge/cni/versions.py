"""CNI spec versions: what we support and which verbs each version allows."""

from __future__ import annotations

import re

from cni_bridge.cni.errors import DecodeError, VersionError, go_quote, go_quote_list
from cni_bridge.cni.supported import CURRENT_VERSION, SUPPORTED_VERSIONS

__all__ = ["CURRENT_VERSION", "SUPPORTED_VERSIONS"]  # re-exported: their home is cni.supported

# A config without cniVersion is read as the oldest spec, as libcni does.
DEFAULT_CONFIG_VERSION = "0.1.0"

# The first spec version that knows each verb; skel refuses older configs with code 1.
MIN_VERSION_FOR_VERB = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


# What Go's strconv.Atoi accepts: an optional sign and ASCII digits (Python's int() would also
# take spaces, underscores and non-ASCII digits).
_NUMBER_RE = re.compile(r"[+-]?[0-9]+")


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse ``major.minor.patch`` as libcni does (a missing patch or minor counts as 0)."""
    parts = text.split(".")
    if not text or len(parts) > 3:
        raise DecodeError(f"invalid version {text!r}: the version is empty or has too many parts")
    if not all(_NUMBER_RE.fullmatch(p) for p in parts):
        raise DecodeError(f"invalid version {text!r}: each part must be a number")
    numbers = [int(p) for p in parts]
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


def ensure_supported(version: str) -> None:
    """Refuse a config version not exactly in our list (code 1, as skel does)."""
    if version not in SUPPORTED_VERSIONS:
        raise VersionError(
            "incompatible CNI versions",
            f"config is {go_quote(version)}, plugin supports {go_quote_list(SUPPORTED_VERSIONS)}",
        )


def ensure_verb_allowed(command: str, version: str) -> None:
    minimum = MIN_VERSION_FOR_VERB.get(command)
    if minimum is not None and not at_least(version, minimum):
        raise VersionError(f"config version does not allow {command}")
