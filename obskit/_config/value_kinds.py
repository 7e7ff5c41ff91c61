"""Value kinds of the settings table: how a raw value is checked and converted.

Kinds are plain classes (not dataclasses: each dataclass costs about a millisecond
at import). Each kind takes a value from one of two places: an argument to ``init()`` (already
a Python value, or a string) or an environment variable (always a string). It
returns the converted value or raises :class:`Invalid` with a description of what
is allowed; ``load()`` turns that into a :class:`~obskit.ConfigError` naming the
setting and the source.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence

#: Values accepted as true and false for boolean settings (case-insensitive).
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class Invalid(Exception):
    """A value does not fit its kind; ``allowed`` says what would."""

    def __init__(self, allowed: str, hint: str = "") -> None:
        super().__init__(allowed)
        self.allowed = allowed
        self.hint = hint


def _text(value: object, allowed: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{allowed} (got {type(value).__name__})")
    text = value.strip()
    if not text:
        raise Invalid(f"{allowed} (got an empty string)")
    return text


class Text:
    """A non-empty string."""

    def describe(self) -> str:
        return "a non-empty string"

    def parse(self, value: object, source: str) -> str:
        return _text(value, self.describe())


class Choice:
    """One of a fixed set of lowercase words."""

    __slots__ = ("options",)

    def __init__(self, options: tuple[str, ...]) -> None:
        self.options = options

    def describe(self) -> str:
        return "one of " + ", ".join(self.options)

    def parse(self, value: object, source: str) -> str:
        word = _text(value, self.describe()).lower()
        if word not in self.options:
            import difflib  # only on the error path: keeps `import obskit` cheap

            close = difflib.get_close_matches(word, self.options, n=1)
            raise Invalid(self.describe(), f"did you mean {close[0]!r}?" if close else "")
        return word


class ChoiceList:
    """A comma-separated list (or a Python sequence) of words from a fixed set."""

    __slots__ = ("options",)

    def __init__(self, options: tuple[str, ...]) -> None:
        self.options = options

    def describe(self) -> str:
        return "a comma-separated list of " + ", ".join(self.options)

    def parse(self, value: object, source: str) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [item.strip().lower() for item in value.split(",")]
        elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            items = [str(item).strip().lower() for item in value]
        else:
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        if not items or any(not item for item in items):
            raise Invalid(f"{self.describe()} (empty entry)")
        unknown = [item for item in items if item not in self.options]
        if unknown:
            raise Invalid(f"{self.describe()} (unknown: {', '.join(unknown)})")
        return tuple(dict.fromkeys(items))


class Flag:
    """A boolean: ``True``/``False`` as arguments, true/false/1/0/yes/no/on/off as text."""

    def describe(self) -> str:
        return "true or false"

    def parse(self, value: object, source: str) -> bool:
        if isinstance(value, bool):
            return value
        word = _text(value, self.describe()).lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise Invalid(self.describe())


class Number:
    """An int or float within ``[low, high]`` (``low`` excluded when ``open_low``).

    ``env_scale`` maps an environment variable to the factor its text is multiplied
    by: the ``OTEL_*`` timeouts are milliseconds while obskit's are seconds.
    """

    __slots__ = ("env_scale", "high", "integer", "low", "open_low")

    def __init__(
        self,
        low: float,
        high: float,
        integer: bool = False,
        open_low: bool = False,
        env_scale: Mapping[str, float] | None = None,
    ) -> None:
        self.low = low
        self.high = high
        self.integer = integer
        self.open_low = open_low
        self.env_scale: Mapping[str, float] = env_scale or {}

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        bracket = "(" if self.open_low else "["
        return f"{kind} in {bracket}{_num(self.low)}, {_num(self.high)}]"

    def parse(self, value: object, source: str) -> float | int:
        number: float | int
        scale = self.env_scale.get(source.removeprefix("env "), 1.0)
        # A scaled variable is an OTEL_* millisecond count: a whole number, as the
        # specification says (SDK 1.27's gRPC exporter reads it with int()).
        whole = self.integer or scale != 1.0
        allowed = self.describe() if scale == 1.0 else self._describe_scaled(scale)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid(f"{allowed} (got {type(value).__name__})")
        if isinstance(value, str):
            text = _text(value, allowed)
            try:
                number = int(text) if whole else float(text)
            except ValueError:
                raise Invalid(allowed) from None
        elif self.integer and not isinstance(value, int):
            raise Invalid(f"{allowed} (got {type(value).__name__})")
        else:
            number = value
        if scale != 1.0:
            number = number * scale
        if not math.isfinite(number):
            raise Invalid(allowed)
        too_low = number <= self.low if self.open_low else number < self.low
        if too_low or number > self.high:
            raise Invalid(allowed)
        return int(number) if self.integer else float(number)

    def _describe_scaled(self, scale: float) -> str:
        bracket = "(" if self.open_low else "["
        unit = "milliseconds" if scale == 0.001 else f"units of {_num(scale)}"
        return (
            f"an integer in {bracket}{_num(round(self.low / scale))}, "
            f"{_num(round(self.high / scale))}] ({unit})"
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Pairs:
    """``key=value`` pairs: a mapping as argument, ``k1=v1,k2=v2`` (percent-encoded) as text.

    This is the format of ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_EXPORTER_OTLP_HEADERS``.
    """

    def describe(self) -> str:
        return "key=value pairs separated by commas (a dict as argument)"

    def parse(self, value: object, source: str) -> dict[str, str]:
        if isinstance(value, Mapping):
            pairs = {}
            for key, item in value.items():
                if not isinstance(key, str) or not key.strip():
                    raise Invalid(f"{self.describe()} (bad key {key!r})")
                if not isinstance(item, (str, int, float, bool)):
                    raise Invalid(
                        f"{self.describe()} (value of {key!r} is a {type(item).__name__})"
                    )
                pairs[key.strip()] = str(item)
            return pairs
        text = _text(value, self.describe())
        pairs = {}
        for chunk in text.split(","):
            if not chunk.strip():
                continue
            key, sep, item = chunk.partition("=")
            key = urllib.parse.unquote(key.strip())
            if not sep or not key:
                raise Invalid(f"{self.describe()} (bad entry {chunk.strip()!r})")
            pairs[key] = urllib.parse.unquote(item.strip())
        return pairs


#: RFC 9110 token characters: what a header name may contain (the SDK's own pattern).
_HEADER_NAME = re.compile(r"[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+")
#: What a header value may contain in an ``OTEL_*_HEADERS`` variable before
#: percent-decoding (the SDK's liberal pattern: no quote, comma, semicolon or backslash).
_HEADER_VALUE = re.compile(r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
#: Control characters, which no header value may carry once decoded.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Headers(Pairs):
    """Pairs that are valid HTTP/gRPC headers: names are tokens (kept lowercase, as the
    SDK keeps them), values carry no control characters.

    The OTLP exporters drop a malformed ``OTEL_EXPORTER_OTLP_HEADERS`` entry with a
    warning; obskit rejects it instead, so a credential is never silently not sent.
    """

    def describe(self) -> str:
        return "name=value headers separated by commas, names made of token characters"

    def parse(self, value: object, source: str) -> dict[str, str]:
        if isinstance(value, str):
            for chunk in value.split(","):
                key, _, item = chunk.strip().partition("=")
                if chunk.strip() and not _HEADER_VALUE.fullmatch(item.strip()):
                    raise Invalid(f"{self.describe()} (bad value for {key.strip()!r})")
        pairs = super().parse(value, source)
        headers = {}
        for key, item in pairs.items():
            if not _HEADER_NAME.fullmatch(key):
                raise Invalid(f"{self.describe()} (bad name {key!r})")
            if _CONTROL.search(item):
                raise Invalid(f"{self.describe()} (control character in the value of {key!r})")
            headers[key.lower()] = item
        return headers


class Count:
    """A whole number from ``low`` up: the SDK's limits, queue sizes and delays."""

    __slots__ = ("low", "unit")

    def __init__(self, low: int = 0, unit: str = "") -> None:
        self.low = low
        self.unit = unit

    def describe(self) -> str:
        words = {0: "a non-negative integer", 1: "a positive integer"}
        text = words.get(self.low, f"an integer of at least {self.low}")
        return f"{text} ({self.unit})" if self.unit else text

    def parse(self, value: object, source: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        if isinstance(value, str):
            try:
                number = int(_text(value, self.describe()))
            except ValueError:
                raise Invalid(self.describe()) from None
        else:
            number = value
        if number < self.low:
            raise Invalid(self.describe())
        return number


class TrueFalse:
    """Exactly ``true`` or ``false`` (any case): the SDK compares its own boolean
    variables with ``"true"``, so ``1`` or ``yes`` would silently mean false there."""

    def describe(self) -> str:
        return "true or false (exactly)"

    def parse(self, value: object, source: str) -> bool:
        if isinstance(value, bool):
            return value
        word = _text(value, self.describe()).lower()
        if word not in ("true", "false"):
            raise Invalid(self.describe())
        return word == "true"


class File:
    """The path of an existing, readable file (a PEM certificate or key)."""

    def describe(self) -> str:
        return "the path of a readable file"

    def parse(self, value: object, source: str) -> str:
        path = _text(value, self.describe())
        if not os.path.exists(path):
            raise Invalid(f"{self.describe()} (no such file)")
        if not os.path.isfile(path):
            raise Invalid(f"{self.describe()} (not a regular file)")
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise Invalid(f"{self.describe()} ({error.strerror or error})") from None
        return path


class EntryPoint:
    """The name of an installed entry point of ``group`` (how the SDK loads plug-ins)."""

    __slots__ = ("group",)

    def __init__(self, group: str) -> None:
        self.group = group

    def describe(self) -> str:
        return f"the name of an installed `{self.group}` entry point"

    def parse(self, value: object, source: str) -> str:
        import importlib.metadata  # only when such a variable is set (~15 ms)

        name = _text(value, self.describe())
        if not importlib.metadata.entry_points(group=self.group, name=name):
            installed = sorted({e.name for e in importlib.metadata.entry_points(group=self.group)})
            shown = ", ".join(installed) if installed else "none is installed"
            raise Invalid(f"{self.describe()} (installed: {shown})")
        return name


class Url:
    """An ``http://`` or ``https://`` URL with a host."""

    def describe(self) -> str:
        return "an http:// or https:// URL with a host, e.g. http://localhost:4318"

    def parse(self, value: object, source: str) -> str:
        text = _text(value, self.describe())
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port  # raises ValueError for a bad port
        except ValueError:
            raise Invalid(self.describe()) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(self.describe())
        del port
        return text


class Buckets:
    """Strictly increasing positive numbers: histogram bucket bounds (``+Inf`` is implied)."""

    def describe(self) -> str:
        return "comma-separated increasing positive numbers (a list as argument)"

    def parse(self, value: object, source: str) -> tuple[float, ...]:
        items: list[object]
        if isinstance(value, str):
            items = [item.strip() for item in _text(value, self.describe()).split(",")]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        bounds = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise Invalid(f"{self.describe()} (bad entry {item!r})")
            try:
                bound = float(item)
            except ValueError:
                raise Invalid(f"{self.describe()} (bad entry {item!r})") from None
            if not math.isfinite(bound) or bound <= 0:
                raise Invalid(f"{self.describe()} (bad entry {item!r})")
            bounds.append(bound)
        if not bounds or any(b <= a for a, b in itertools.pairwise(bounds)):
            raise Invalid(f"{self.describe()} (not increasing)")
        return tuple(bounds)


class Names:
    """A comma-separated list (or a Python sequence) of names; may be empty as a sequence."""

    __slots__ = ("lower",)

    def __init__(self, lower: bool = True) -> None:
        self.lower = lower

    def describe(self) -> str:
        return "a comma-separated list of names (a list as argument)"

    def parse(self, value: object, source: str) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [item.strip() for item in _text(value, self.describe()).split(",")]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = [str(item).strip() for item in value]
        else:
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        if any(not item for item in items):
            raise Invalid(f"{self.describe()} (empty entry)")
        return tuple(item.lower() if self.lower else item for item in items)


Kind = (
    Text
    | Choice
    | ChoiceList
    | Flag
    | Number
    | Pairs
    | Headers
    | Url
    | Buckets
    | Names
    | Count
    | TrueFalse
    | File
    | EntryPoint
)
