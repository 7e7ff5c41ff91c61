"""The ``obskit.access`` line of an HTTP request, formatted directly.

Every request writes one access line, so it is the hottest log call obskit makes.
Its fields are fixed (method, route, path, status, duration, optionally the client
address) and plain (strings and numbers), so the JSON line the log pipeline would
render can be written with one format string: the same fields, in the same order,
with the same values and the same escaping as ``get_logger("obskit.access").info(...)``
through the JSON chain.

The direct path is taken only when that equivalence is certain: the access logger's
line would be rendered by the log-line accelerator (:func:`obskit._fast.log_lines.renders_plain`:
it is on, the JSON chain is unchanged since ``init()`` -- no console renderer, no
test clock, no injected fault -- and no structlog context variable is bound, since
``obskit.bind()`` fields are merged by the chain), no configured field has an
access-line name, and the line fits the size cap (otherwise the chain truncates it).
The template reproduces that accelerator's rendering, which is obskit's own code;
anything else takes the ordinary logger call. ``tests/test_access_line.py`` compares
both byte for byte.
"""

from __future__ import annotations

import json
import re
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    get_current_span,
    set_span_in_context,
)

from obskit._fast.log_lines import renders_plain
from obskit._logs.json_render import render_json
from obskit._logs.pipeline import get_logger, pipeline
from obskit._logs.processors import DIGITS3, utc_now_iso
from obskit._traces.ids import hex_ids

#: One logger for every access line, and the pipeline it writes through (one per
#: process, reconfigured in place by init(): neither goes stale).
access_log = get_logger("obskit.access")
_shared = pipeline()

_escape = json.encoder.encode_basestring_ascii
#: Whether a method needs no JSON escaping (the normalised methods all match).
_PLAIN_METHOD = re.compile(r"[A-Z_]{1,16}").fullmatch
#: Keys of the access line: configured fields with one of these names change it.
_KEYS = frozenset(
    {
        "logger",
        "http.request.method",
        "http.route",
        "url.path",
        "http.response.status_code",
        "duration_ms",
        "client.address",
        "event",
        "level",
        "timestamp",
        "trace_id",
        "span_id",
    }
)


def _fields_tail(fields: dict[str, str]) -> str | None:
    """The pipeline's fields as the JSON members after the ids; None if one is named
    like an access-line field (then the chain renders the line)."""
    if not fields:
        return ""
    if fields.keys() & _KEYS:
        return None
    return ", " + render_json(fields, 1 << 30)[1:-1]


def write(
    method: str,
    route: str,
    path: str,
    status: int | None,
    duration_us: int,
    client_address: str | None,
    context: SpanContext | None = None,
    ids: tuple[Any, ...] | None = None,
) -> None:
    """Write the access line of a finished request, in its context.

    ``path``: the path as the request's span records it (``url.path``), its path
    parameters already redacted (:func:`obskit._http.redaction.redact_path`); the line
    never carries the query string. Its control characters are escaped by the renderer
    (JSON, or the console's :func:`obskit._logs.processors.console_safe`).
    ``duration_us``: whole microseconds, written as ``duration_ms`` with three decimals
    (the float ``duration_us / 1000``). ``context``: the request span's context, whose
    ids the line carries (the current span's when None, as any log line; a request ends
    with its span current, so both are usually the same). ``ids``: instead of
    ``context``, its :func:`~obskit._traces.ids.hex_ids` if it is valid, ``()`` if not
    (a request has them).
    """
    shared = _shared
    if shared.level > 20:
        return
    line = None
    if renders_plain(access_log, shared):
        line = _format(
            shared, method, route, path, status, duration_us, client_address, context, ids
        )
    if line is not None:
        shared.writer.msg(line)
        return
    fields: dict[str, Any] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "http.response.status_code": status,
        "duration_ms": duration_us / 1000,
    }
    if client_address:
        fields["client.address"] = client_address
    if ids is not None:
        context = ids[0] if ids else INVALID_SPAN_CONTEXT
    if context is None or get_current_span().get_span_context() is context:
        access_log.info(f"{method} {path} {status}", **fields)
        return
    # The line carries the request span's ids, whichever span is current now.
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(context)))
    try:
        access_log.info(f"{method} {path} {status}", **fields)
    finally:
        otel_context.detach(token)


#: The text after the whole milliseconds for each remainder of microseconds, as repr()
#: ends the quotient: 0 -> ".0", 230 -> ".23", 5 -> ".005".
_FRACTIONS = tuple("." + (digits.rstrip("0") or "0") for digits in DIGITS3)


def milliseconds_text(duration_us: int) -> str:
    """``repr(duration_us / 1000)`` for ``0 <= duration_us < 10**12``, in integers.

    The quotient is the float nearest the decimal ``<ms>.<3 digits>``, which has at
    most 12 significant digits: repr() prints exactly that decimal (its shortest text
    that parses back, without trailing zeros but one, and no exponent in this range).
    """
    return f"{duration_us // 1000}{_FRACTIONS[duration_us % 1000]}"


#: (the pipeline's fields dict, their tail from :func:`_fields_tail`, the line templates
#: made with them by (method, route, status); () when no template can make the line).
_templates: tuple[Any, str | None, dict[tuple[str, str, int | None], tuple[str, ...]]] = (
    None,
    None,
    {},
)
#: Distinct (method, route, status) templates kept (routes are bounded; more are rebuilt).
_TEMPLATES_MAX = 1024


def _template(method: str, route: str, status: int | None, tail: str) -> tuple[str, ...]:
    """The line for (method, route, status) as the 7 texts around the per-request values:
    escaped path, duration, client member, path for the event text, timestamp, ids.
    () when the method needs escaping (then the chain renders the line)."""
    if not _PLAIN_METHOD(method):
        return ()
    code = "null" if status is None else int.__repr__(status)
    return tuple(
        (
            f'{{"logger": "obskit.access", "http.request.method": "{method}", '
            f'"http.route": {_escape(route)}, "url.path": \x00, '
            f'"http.response.status_code": {code}, "duration_ms": \x00\x00, '
            f'"event": "{method} \x00 {"None" if status is None else code}", "level": "info", '
            f'"timestamp": "\x00"\x00{tail}}}'
        ).split("\x00")
    )


def _format(
    shared: Any,
    method: str,
    route: str,
    path: str,
    status: int | None,
    duration_us: int,
    client_address: str | None,
    context: SpanContext | None = None,
    ids: tuple[Any, ...] | None = None,
) -> str | None:
    cached = _templates
    if cached[0] is not shared.fields:
        cached = _new_templates(shared.fields)
    tail = cached[1]
    if tail is None:
        return None
    if type(duration_us) is not int or not 0 <= duration_us < 10**12:
        return None  # negative or huge: the chain renders the float
    if status is not None and type(status) is not int:
        return None
    key = (method, route, status)
    templates = cached[2]
    pieces = templates.get(key)
    if pieces is None:
        pieces = _template(method, route, status, tail)
        if len(templates) < _TEMPLATES_MAX:
            templates[key] = pieces
    if not pieces:
        return None
    if ids is None:
        if context is None:
            context = get_current_span().get_span_context()
        ids = hex_ids(context) if context.is_valid else ()
    ids_text = f', "trace_id": "{ids[1]}", "span_id": "{ids[2]}"' if ids else ""
    quoted_path = _escape(path)
    client = f', "client.address": {_escape(client_address)}' if client_address else ""
    # An f-string of the pieces: cheaper than one %-format of the whole line. The
    # duration is milliseconds_text(duration_us), inlined (a call less per request).
    start, after_path, after_duration, after_client, after_event_path, after_time, end = pieces
    line = (
        f"{start}{quoted_path}{after_path}{duration_us // 1000}{_FRACTIONS[duration_us % 1000]}"
        f"{after_duration}{client}{after_client}{quoted_path[1:-1]}{after_event_path}"
        f"{utc_now_iso()}{after_time}{ids_text}{end}"
    )
    return line if len(line) <= shared.max_bytes else None


def _new_templates(
    fields: dict[str, str],
) -> tuple[Any, str | None, dict[Any, tuple[str, ...]]]:
    global _templates
    _templates = (fields, _fields_tail(fields), {})
    return _templates
