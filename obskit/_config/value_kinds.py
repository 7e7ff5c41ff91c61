"""Value kinds of the settings table: how a raw value is checked and converted.

Kinds are plain classes (not dataclasses: each dataclass costs about a millisecond
at import). Each kind takes a value from one of two places: an argument to ``init()`` (already
a Python value, or a string) or an environment variable (always a string). It
returns the converted value or raises :class:`Invalid` with a description of what
is allowed; ``_settings`` turns that into a :class:`~obskit.ConfigError` naming the
setting and the source.
"""

from __future__ import annotations

import itertools
import math
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
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        if isinstance(value, str):
            text = _text(value, self.describe())
            try:
                number = int(text) if self.integer else float(text)
            except ValueError:
                raise Invalid(self.describe()) from None
        elif self.integer and not isinstance(value, int):
            raise Invalid(f"{self.describe()} (got {type(value).__name__})")
        else:
            number = value
        scale = self.env_scale.get(source.removeprefix("env "), 1.0)
        if scale != 1.0:
            number = number * scale
        if not math.isfinite(number):
            raise Invalid(self.describe())
        too_low = number <= self.low if self.open_low else number < self.low
        if too_low or number > self.high:
            raise Invalid(self.describe())
        return int(number) if self.integer else float(number)


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


Kind = Text | Choice | ChoiceList | Flag | Number | Pairs | Url | Buckets | Names
