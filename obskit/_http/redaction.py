"""Redaction of what a request carries: header values, query strings, URLs in headers.

The rule, in one place for spans (``url.query``, ``url.path``, captured headers) and the
access line:

- a **query string** keeps its parameter names and loses its values: each value becomes
  ``[REDACTED]`` unless its name is in ``http_query_allowlist`` (empty by default). Both
  ``&`` and ``;`` separate parameters; names are matched percent-decoded (``%74oken`` is
  ``token``, ``+`` is a space) and case-insensitively; every occurrence of a repeated name
  is handled on its own; an empty value stays empty; a parameter without ``=`` may be a
  value on its own (``?<token>``), so it is kept only when allowlisted. Names are shown
  re-encoded, so a name never carries a raw separator or control character;
- **sensitive names** (:data:`SENSITIVE_HEADERS`, names containing a
  :data:`SENSITIVE_PARTS` word or equal to a :data:`SENSITIVE_NAMES` word, and the
  ``http_redact`` setting) are redacted whatever the allowlist says: the settings check
  refuses to allowlist one;
- a captured **header** with a sensitive name becomes ``[REDACTED]``; a header that holds a
  URL (:data:`URL_HEADERS`, or any value with ``://``) keeps the URL without the
  ``user:password@`` part, with its query (and fragment) redacted by the rule above;
- **path parameters** (``/cart;jsessionid=...``) follow the query rule.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

REDACTED = "[REDACTED]"
#: Header names whose values are never recorded, even when capture is asked for.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrftoken",
        "x-forwarded-for",
        "x-real-ip",
        # W3C baggage often carries user ids and e-mail addresses; obskit never records it.
        "baggage",
    }
)
#: A query parameter or header is sensitive if its name contains one of these...
SENSITIVE_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "signature",
    "credential",
    "session",
    "jwt",
    "auth",
)
#: ...or is exactly one of these.
SENSITIVE_NAMES = frozenset({"sig", "pwd", "key", "pass", "code"})
#: Headers whose value is a URL (or a list of them): recorded with the URL rule.
URL_HEADERS = frozenset(
    {
        "referer",
        "location",
        "content-location",
        "origin",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-forwarded-uri",
    }
)

#: The parameter separators of a query string (kept in the output as they were).
_SEPARATOR = re.compile(r"([&;])")
#: The start of a URL with an authority: ``scheme://`` or ``//``.
_AUTHORITY = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//")
#: Characters left as they are when a name or an allowlisted value is re-encoded.
_SAFE = "[]"


def is_sensitive(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a header or query parameter named ``name`` must be redacted."""
    lowered = name.lower()
    if lowered in SENSITIVE_HEADERS or lowered in SENSITIVE_NAMES or lowered in extra:
        return True
    return any(part in lowered for part in SENSITIVE_PARTS)


def _decoded(text: str) -> str:
    return urllib.parse.unquote_plus(text, errors="replace")


def _encoded(text: str) -> str:
    return urllib.parse.quote_plus(text, safe=_SAFE)


def _parameter(item: str, extra: tuple[str, ...], allow: tuple[str, ...]) -> str:
    """One ``name=value`` (or bare ``name``) of a query string, redacted."""
    if not item:
        return ""
    raw_name, equals, raw_value = item.partition("=")
    name = _decoded(raw_name)
    key = name.lower()
    shown = key in allow and not is_sensitive(key, extra)
    if not equals:
        return _encoded(name) if shown else REDACTED
    if not raw_value:
        return _encoded(name) + "="
    return _encoded(name) + "=" + (_encoded(_decoded(raw_value)) if shown else REDACTED)


def redact_query(query: str, extra: Iterable[str] = (), allow: Iterable[str] = ()) -> str:
    """``query`` (without its ``?``) with every value replaced by ``[REDACTED]`` unless
    its name is in ``allow`` (lower-case names) and not sensitive (``extra``: more
    sensitive names); names kept (re-encoded), separators kept."""
    if not query:
        return ""
    extra = tuple(extra)
    allow = tuple(allow)
    parts = _SEPARATOR.split(query)
    # Even indexes are parameters, odd ones the separators between them.
    return "".join(
        part if index % 2 else _parameter(part, extra, allow) for index, part in enumerate(parts)
    )


def redact_path(path: str, extra: Iterable[str] = (), allow: Iterable[str] = ()) -> str:
    """``path`` with the values of its path parameters (``/a;name=value/b``) redacted as
    a query's; a path without ``;`` is returned as it is."""
    if ";" not in path:
        return path
    extra = tuple(extra)
    allow = tuple(allow)
    segments = path.split("/")
    for index, segment in enumerate(segments):
        head, semicolon, parameters = segment.partition(";")
        if semicolon:
            segments[index] = head + ";" + redact_query(parameters, extra, allow)
    return "/".join(segments)


def redact_url(url: str, extra: Iterable[str] = (), allow: Iterable[str] = ()) -> str:
    """``url`` without ``user:password@``, its query and fragment redacted as a query
    string (:func:`redact_query`), its path parameters as :func:`redact_path`."""
    extra = tuple(extra)
    allow = tuple(allow)
    rest, hash_mark, fragment = url.partition("#")
    rest, question, query = rest.partition("?")
    start = _AUTHORITY.match(rest)
    prefix = ""
    if start is not None:
        prefix, rest = rest[: start.end()], rest[start.end() :]
        # The authority ends at the first "/" (or "\", which browsers read as "/").
        end = min((i for i in (rest.find("/"), rest.find("\\")) if i >= 0), default=len(rest))
        authority, rest = rest[:end], rest[end:]
        prefix += authority.rpartition("@")[2]
    parts = [prefix, redact_path(rest, extra, allow)]
    if question:
        parts += ["?", redact_query(query, extra, allow)]
    if hash_mark:
        parts += ["#", redact_query(fragment, extra, allow)]
    return "".join(parts)


def redact_header(
    name: str, value: str, extra: Iterable[str] = (), allow: Iterable[str] = ()
) -> str:
    """The value of header ``name`` (lower-case) as recorded: ``[REDACTED]`` for a
    sensitive name, the URL rule for a URL-bearing header, else the value."""
    if is_sensitive(name, extra):
        return REDACTED
    if name in URL_HEADERS or "://" in value:
        return redact_url(value, extra, allow)
    return value


def allowlist_problem(name: str, extra: Iterable[str] = ()) -> str | None:
    """Why ``name`` cannot be in ``http_query_allowlist`` (None if it can)."""
    if not name or any(c in name for c in "&;=#?%+") or not name.isprintable() or " " in name:
        return (
            "a comma-separated list of query parameter names, as they read decoded"
            " (no '&', ';', '=', '#', '?', '%', '+', spaces or control characters)"
        )
    if is_sensitive(name, extra):
        return (
            "names that are not sensitive: this one is always redacted (it is in"
            " http_redact, contains one of "
            + ", ".join(SENSITIVE_PARTS)
            + ", or is one of "
            + ", ".join(sorted(SENSITIVE_NAMES | SENSITIVE_HEADERS))
            + ")"
        )
    return None
