"""CNI_ARGS parsing with the reference's semantics (types.LoadArgs)."""

from __future__ import annotations

from cni_bridge.cni.errors import CniError, go_quote, go_quote_list

IGNORE_UNKNOWN = "IgnoreUnknown"
_TRUE = {"1", "true"}
_BOOL_WORDS = {"0", "1", "true", "false"}


def split_cni_args(raw: str) -> list[tuple[str, str]]:
    """Split ``K1=V1;K2=V2`` into pairs; every pair must have exactly one '='."""
    if not raw:
        return []
    pairs = []
    for item in raw.split(";"):
        kv = item.split("=")
        if len(kv) != 2:
            raise CniError(f"ARGS: invalid pair {go_quote(item)}", "CNI_ARGS must be K1=V1;K2=V2")
        pairs.append((kv[0], kv[1]))
    return pairs


def parse_cni_args(raw: str, known: set[str] | frozenset[str]) -> dict[str, str]:
    """The known keys (case-sensitive, like Go fields); others fail unless IgnoreUnknown."""
    pairs = split_cni_args(raw)
    values = dict(pairs)
    ignore = values.get(IGNORE_UNKNOWN, "")
    # Present but empty is an error too, as in Go's UnmarshallableBool.
    if IGNORE_UNKNOWN in values and ignore.lower() not in _BOOL_WORDS:
        raise CniError("ARGS: invalid value for IgnoreUnknown", f"IgnoreUnknown={ignore!r}")
    # Like libcni, the message lists the whole K=V pairs.
    unknown = [f"{k}={v}" for k, v in pairs if k not in known and k != IGNORE_UNKNOWN]
    if unknown and ignore.lower() not in _TRUE:
        raise CniError(f"ARGS: unknown args {go_quote_list(unknown)}",
                       "set IgnoreUnknown=1 to allow them")
    return {k: v for k, v in values.items() if k in known}
