"""Just enough YAML to read a kubeconfig (block mappings and sequences, plain and quoted scalars,
comments; JSON), without a YAML library in the frozen build. Anything else raises YamlError
naming the line: a kubeconfig this cannot read fails loudly instead of being misread.
"""

from __future__ import annotations

import json
from typing import Any


class YamlError(ValueError):
    pass


def load(text: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise YamlError(f"not valid JSON: {exc}") from None
    lines = _lines(text)
    if not lines:
        return None
    value, pos = _block(lines, 0, lines[0][1])
    if pos != len(lines):
        raise YamlError(f"line {lines[pos][0]}: unexpected indentation")
    return value


def _lines(text: str) -> list[tuple[int, int, str]]:
    """(line number, indent, content without comment) for every line with content."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if not content.strip() or content.strip() in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError(f"line {number}: tab in indentation")
        out.append((number, len(content) - len(content.lstrip()), content.strip()))
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " :-[{,"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _block(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos][2].startswith("- ") or lines[pos][2] == "-":
        return _sequence(lines, pos, indent)
    return _mapping(lines, pos, indent)


def _sequence(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Any, int]:
    items: list[Any] = []
    while pos < len(lines) and lines[pos][1] == indent and lines[pos][2].startswith("-"):
        number, _, content = lines[pos]
        rest = content[1:].lstrip()
        if not rest:  # "-" alone: the item is the nested block
            if pos + 1 >= len(lines) or lines[pos + 1][1] <= indent:
                items.append(None)
                pos += 1
                continue
            item, pos = _block(lines, pos + 1, lines[pos + 1][1])
        elif _key_value(rest) is not None:  # "- key: value" opens a mapping
            inner = indent + (len(content) - len(rest))
            lines[pos] = (number, inner, rest)
            item, pos = _mapping(lines, pos, inner)
        else:
            item, pos = _scalar(rest, number), pos + 1
        items.append(item)
    return items, pos


def _mapping(lines: list[tuple[int, int, str]], pos: int, indent: int) -> tuple[Any, int]:
    result: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][1] == indent:
        number, _, content = lines[pos]
        pair = _key_value(content)
        if pair is None:
            raise YamlError(f"line {number}: expected 'key: value'")
        key, rest = pair
        pos += 1
        if rest:
            result[key] = _scalar(rest, number)
        elif pos < len(lines) and (lines[pos][1] > indent or (
                lines[pos][1] == indent and lines[pos][2].startswith("-"))):
            result[key], pos = _block(lines, pos, lines[pos][1])
        else:
            result[key] = None
    return result, pos


def _key_value(content: str) -> tuple[str, str] | None:
    if content[:1] in "'\"":
        end = content.find(content[0], 1)
        if end < 0 or not content[end + 1:].startswith(":"):
            return None
        return content[1:end], content[end + 2:].strip()
    key, sep, rest = content.partition(": ")
    if not sep:
        if not content.endswith(":"):
            return None
        key, rest = content[:-1], ""
    if not key.strip() or key.startswith(("[", "{")):
        return None
    return key.strip(), rest.strip()


def _scalar(text: str, number: int) -> Any:
    if text[0] == '"':
        try:
            return json.loads(text)
        except ValueError:
            raise YamlError(f"line {number}: bad double-quoted string") from None
    if text[0] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"line {number}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    if text[0] in "[{&*!|>":
        raise YamlError(f"line {number}: this YAML form is not supported in a kubeconfig "
                        f"here ({text[:20]!r}); write it as a block or use JSON")
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)
