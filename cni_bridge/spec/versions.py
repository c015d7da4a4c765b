"""CNI spec versions: what we support and which verbs each version allows."""

from __future__ import annotations

from cni_bridge.spec.errors import DecodeError, VersionError

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
# A config without cniVersion is read as the oldest spec, as libcni does.
DEFAULT_CONFIG_VERSION = "0.1.0"

# The first spec version that knows each verb; skel refuses older configs with code 1.
MIN_VERSION_FOR_VERB = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse ``major.minor.patch`` (libcni accepts a missing patch or minor)."""
    parts = text.split(".")
    if not text or len(parts) > 3:
        raise DecodeError(f"invalid version {text!r}: the version is empty or has too many parts")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise DecodeError(f"invalid version {text!r}: each part must be a number") from None
    if any(n < 0 for n in numbers):
        raise DecodeError(f"invalid version {text!r}: parts must not be negative")
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
            f'config is "{version}", plugin supports {list(SUPPORTED_VERSIONS)}',
        )


def ensure_verb_allowed(command: str, version: str) -> None:
    minimum = MIN_VERSION_FOR_VERB.get(command)
    if minimum is not None and not at_least(version, minimum):
        raise VersionError(f"config version does not allow {command}")
