"""HTTP request methods as telemetry names them (OpenTelemetry's HTTP conventions).

A module of its own, importing nothing: dump and crash lines name a request's span
without loading the HTTP metrics.
"""

from __future__ import annotations

__all__ = ["KNOWN_METHODS", "normalize_method", "span_method"]

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: The standard methods as servers send them: a request's method found in one lookup.
_SAME_METHOD = {method: method for method in KNOWN_METHODS}


def normalize_method(method: str) -> str:
    """The method, or ``_OTHER`` for non-standard ones (bounded label values)."""
    same = _SAME_METHOD.get(method)
    if same is not None:
        return same
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else "_OTHER"


def span_method(method: str) -> str:
    """The method as a span name starts with it: ``HTTP`` for ``_OTHER`` (the HTTP
    semantic conventions' span name ``{method} {target}``)."""
    return "HTTP" if method == "_OTHER" else method
