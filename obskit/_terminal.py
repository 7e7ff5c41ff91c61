"""Text made safe for a terminal: every control character shown as an escape.

What obskit prints for a person to read (console log lines, the span waterfall,
``obskit demo``) carries text from outside the process: URL paths, header values,
exception messages. Written raw, an ``ESC`` starts a terminal escape sequence (colours,
cursor moves, a window title) and a newline, carriage return or ``U+2028`` starts what
looks like another log line. Here every C0 control, ``DEL``, every C1 control,
``U+2028``/``U+2029`` and the bidirectional-text controls (which reorder what is shown)
become visible escapes: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028``. Backslashes
are left as they are (the output is for reading, not for parsing back).

Used by modules of several signals, so it belongs to none of them; imports nothing.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: C0, DEL, C1, the line and paragraph separators, the bidirectional controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped: one line, no escape sequence."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


def escape_block(text: str, indent: str = "  ") -> str:
    """A multi-line ``text`` (a traceback, a stack) kept on its lines, each line escaped
    and indented by ``indent``, so none of it can pass for a line of its own (a log line
    starts at the first column)."""
    return "\n".join(indent + escape_controls(line) for line in text.split("\n"))
