"""YAML written without a YAML library: block mappings and lists of text, numbers and
booleans, which is all a Prometheus rule file or a Kubernetes manifest holds.

Text is written plain when YAML reads it back as the same text, as a literal block
(``|-``) when it spans lines, and double-quoted (JSON escapes, which YAML shares)
otherwise, so both PyYAML and Go's YAML parser (Prometheus, kubectl) read back exactly
what was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

#: Text written as is: printable ASCII that starts with none of YAML's indicators
#: (``: `` and `` #`` are refused below).
_PLAIN = re.compile(r"[A-Za-z_/(][\x20-\x7e]*")
#: Characters YAML does not allow in a document, or reads as line breaks: escaped.
_UNPRINTABLE = re.compile(
    r"[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]"
)
#: Words YAML 1.1 (Go's parser, PyYAML) reads as booleans or null.
_KEYWORDS = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"))


def dump(value: object) -> str:
    """``value`` (mappings, lists, text, numbers, booleans) as a YAML document."""
    lines: list[str] = []
    _block(value, 0, lines)
    return "\n".join(lines) + "\n"


def _block(value: object, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            _entry(f"{pad}{_scalar(str(key))}:", item, indent, lines)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            _entry(f"{pad}-", item, indent, lines, in_list=True)
    else:
        lines.append(pad + _scalar(value))


def _entry(head: str, item: object, indent: int, lines: list[str], in_list: bool = False) -> None:
    if isinstance(item, Mapping) and item:
        if in_list:  # "- key: value" then the other keys aligned under the first
            first = len(lines)
            _block(item, indent + 2, lines)
            lines[first] = head + lines[first][len(head) :]
        else:
            lines.append(head)
            _block(item, indent + 2, lines)
    elif isinstance(item, Sequence) and not isinstance(item, str) and item:
        lines.append(head)
        _block(item, indent + (2 if in_list else 0), lines)
    elif isinstance(item, str) and "\n" in item and _literal_ok(item):
        lines.append(f"{head} |-")
        lines.extend(" " * (indent + 2) + line if line else "" for line in item.split("\n"))
    else:
        lines.append(f"{head} {_scalar(item)}")


def _literal_ok(text: str) -> bool:
    """Whether a literal block reads back as ``text`` (no edge whitespace, no tabs)."""
    return (
        text == text.strip()
        and not _UNPRINTABLE.search(text)
        and "\t" not in text
        and "\r" not in text
        and not text.split("\n")[0].startswith(" ")
        and all(line == line.rstrip() for line in text.split("\n"))
    )


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    text = str(value)
    if (
        _PLAIN.fullmatch(text)
        and text.lower() not in _KEYWORDS
        and text == text.strip()
        and ": " not in text
        and " #" not in text
        and not text.endswith(":")
    ):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _UNPRINTABLE.sub(lambda found: _escape(found.group()), quoted)


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
