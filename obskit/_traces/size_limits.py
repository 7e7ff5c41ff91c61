"""Bounded export sizes: one length limit for every string a span carries, and export
requests that never exceed a byte cap.

OpenTelemetry's span limits cut span attributes (and, only when
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` is set, event and link attributes) as they are
recorded; a span's name, its events' names, its status description and, by default,
an exception's message and stacktrace are kept whole. One 10 MB exception message
then makes a request a collector refuses (most accept at most 4 MiB), and every other
span of the batch is lost with it.

:class:`SizeLimits` works on the ended spans just before they are exported, so both
span paths (the SDK's and obskit's fast path) are covered and a normal call pays
nothing for it:

- every string exported — span and event names, the status description, span, event
  and link attribute values (inside lists and maps too) — is cut to the length limit
  (``attribute_value_length_limit``); ``exception.stacktrace`` keeps its head and its
  tail (the innermost frames and the exception line) and says how much was cut between
  them. Attribute keys and the resource are left as they are.
- the batch is split into requests whose encoded size stays within the byte cap,
  estimated from above without encoding (protobuf framing counted at its largest);
- a span still larger than the room of one request is cut further (strings to a
  quarter of the limit at a time, down to :data:`MIN_LENGTH`; then half of its
  attributes, events and links at a time, the counts of the removed ones added to its
  ``dropped_*`` counts). Only a span that cannot fit even then is dropped, alone.

A cut span is a new :class:`~opentelemetry.sdk.trace.ReadableSpan` built with the
SDK's public constructor; a span that needs no cut is passed on as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

#: The shortest a string is cut to when a span must shrink to fit in one request.
MIN_LENGTH = 64
#: The attribute key whose value keeps its head and tail when cut.
STACKTRACE = "exception.stacktrace"
#: Nesting (lists and maps inside attribute values) followed; deeper values are
#: replaced by a short text, which also keeps a request within every protobuf parser's
#: recursion limit (100 nested messages for Python's, three per level here).
MAX_DEPTH = 16

# Upper bounds of protobuf's framing, in bytes. A length-delimited field is a tag
# (1-2 bytes) and a length (at most 5 bytes for anything under 32 GiB); a varint at
# most 10 bytes. The constants below are the sums for each message, rounded up.
_FIELD = 7
#: A key/value pair around its key and value: the KeyValue and AnyValue frames.
_PAIR = 3 * _FIELD
#: An int (10-byte varint), a double (8 bytes) or a bool, with its tag.
_SCALAR = 11
_SCALARS = frozenset({int, float, bool})
#: A key/value pair under 100 bytes: its frames (1-byte lengths) and a scalar value.
_SMALL_PAIR = 8 + _SCALAR
#: A span's fixed fields: its frame, trace and span ids, parent id, kind, start and end
#: times, flags, the three dropped counts and the status frame with its code (101).
_SPAN = 112
#: An event's frame, time and dropped count.
_EVENT = 32
#: A link's frame, trace and span ids, flags and dropped count.
_LINK = 64
#: The frames of one resource's and one scope's group in a request.
_GROUP = 64


def _bytes(text: str) -> int:
    """The UTF-8 size of ``text`` (``str.isascii`` is constant-time in CPython)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def cut_stacktrace(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, keeping a third from its head and
    the rest from its tail (where Python puts the innermost frames and the exception),
    each cut at a line end where one is near, with a line between them that says how
    many characters were cut."""
    if len(text) <= limit:
        return text
    longest = len(f"\n[... {len(text)} characters cut ...]\n")  # the count only shrinks
    room = limit - longest
    if room < 2 * MIN_LENGTH:
        return text[:limit]
    head = text[: room // 3]
    newline = head.rfind("\n")
    if newline >= len(head) // 2:
        head = head[: newline + 1]
    tail = text[len(text) - (room - room // 3) :]
    newline = tail.find("\n")
    if 0 <= newline < len(tail) // 2:
        tail = tail[newline + 1 :]
    cut = len(text) - len(head) - len(tail)
    before = "" if head.endswith("\n") else "\n"
    return f"{head}{before}[... {cut} characters cut ...]\n{tail}"


def _cut(key: str, text: str, limit: int) -> str:
    return cut_stacktrace(text, limit) if key == STACKTRACE else text[:limit]


def _deep_value(value: Any, limit: int, depth: int) -> tuple[Any, int, bool]:
    """A list or map value (or an unexpected type) fitted to ``limit``: (value, its
    encoded size at most, whether it changed)."""
    if depth >= MAX_DEPTH:
        return "<nested too deep>", _FIELD + 17, True
    if isinstance(value, bytes):
        if len(value) > limit:
            return value[:limit], _FIELD + limit, True
        return value, _FIELD + len(value), False
    if isinstance(value, Mapping):
        items: list[tuple[Any, Any]] = []
        size = _FIELD
        changed = False
        for key, item in value.items():
            item, item_size, item_changed = _value(str(key), item, limit, depth + 1)
            items.append((key, item))
            size += _PAIR + _bytes(str(key)) + item_size
            changed = changed or item_changed
        return (dict(items) if changed else value), size, changed
    if isinstance(value, Sequence):
        values: list[Any] = []
        size = _FIELD
        changed = False
        for item in value:
            item, item_size, item_changed = _value("", item, limit, depth + 1)
            values.append(item)
            size += _FIELD + item_size
            changed = changed or item_changed
        return (tuple(values) if changed else value), size, changed
    # The encoder skips (and logs) a value of any other type: nothing to send.
    return value, 0, False


def _value(key: str, value: Any, limit: int, depth: int) -> tuple[Any, int, bool]:
    """One attribute value fitted to ``limit``: (value, encoded size at most, changed)."""
    kind = type(value)
    if kind is str:
        if len(value) > limit:
            value = _cut(key, value, limit)
            return value, _FIELD + _bytes(value), True
        return value, _FIELD + _bytes(value), False
    if kind is int or kind is float or kind is bool or value is None:
        return value, _SCALAR, False
    if isinstance(value, str):  # a str subclass
        return _value(key, str(value), limit, depth)
    return _deep_value(value, limit, depth)


def _attributes(
    attributes: Mapping[str, Any] | None, limit: int, keep: int | None
) -> tuple[Mapping[str, Any] | None, int, int]:
    """Attributes fitted to ``limit``, the first ``keep`` of them (all: ``None``):
    (the attributes, or ``None`` when none changed; encoded size at most; how many
    were left out)."""
    if not attributes:
        return None, 0, 0
    if keep is not None and keep < len(attributes):
        first = dict(list(attributes.items())[:keep])
        fitted, size, _ = _attributes(first, limit, None)
        return (fitted if fitted is not None else first), size, len(attributes) - keep
    out: dict[str, Any] | None = None
    # A pair whose key and string value are under 100 bytes has 1-byte lengths: its
    # frames take 8 bytes, a scalar value 11 more (_SMALL_PAIR); a bigger pair's frames
    # take at most _PAIR + _SCALAR.
    size = len(attributes) * _SMALL_PAIR
    for key, value in attributes.items():
        length = len(key) if type(key) is str and key.isascii() else _bytes(str(key))
        if type(value) is str:
            if len(value) > limit:
                value = _cut(key, value, limit)
                if out is None:
                    out = dict(attributes)
                out[key] = value
            length += len(value) if value.isascii() else _bytes(value)
        elif type(value) not in _SCALARS:
            value, value_size, changed = _value(key, value, limit, 0)
            if changed:
                if out is None:
                    out = dict(attributes)
                out[key] = value
            length += value_size
        size += length if length < 100 else length + _PAIR + _SCALAR - _SMALL_PAIR
    return out, size, 0


class _CutEvent(Event):
    """An event rebuilt with cut values; it reports the dropped attributes of the
    original plus those left out."""

    def __init__(
        self, name: str, attributes: Mapping[str, Any] | None, timestamp: int, dropped: int
    ) -> None:
        super().__init__(name, attributes, timestamp)
        self._obskit_dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._obskit_dropped


class _CutLink(Link):
    """A link rebuilt with cut attribute values, keeping the original's dropped count."""

    def __init__(self, link: Link, attributes: Mapping[str, Any] | None, dropped: int) -> None:
        super().__init__(link.context, attributes)
        self._obskit_dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._obskit_dropped


class _CutSpan(ReadableSpan):
    """A span rebuilt with cut strings (the SDK's public constructor), reporting what the
    original dropped plus what was left out to make it fit."""

    def __init__(
        self,
        span: ReadableSpan,
        name: str,
        attributes: Mapping[str, Any] | None,
        events: Sequence[Event],
        links: Sequence[Link],
        status: Status,
        dropped: tuple[int, int, int],
    ) -> None:
        super().__init__(
            name=name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=events,
            links=links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        self._obskit_dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._obskit_dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._obskit_dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._obskit_dropped[2]


def _trace_state_size(span: ReadableSpan) -> int:
    context = span.context
    state = context.trace_state if context is not None else None
    if not state:
        return 0
    return _FIELD + sum(_bytes(k) + _bytes(v) + 2 for k, v in state.items())


def fit_span(span: ReadableSpan, limit: int, keep: int | None = None) -> tuple[ReadableSpan, int]:
    """``span`` with every string cut to ``limit`` characters and, with ``keep``, at most
    that many attributes, events (the last ones: an exception is recorded last), links,
    and attributes on each: (the span — the same object when nothing changed —, its
    encoded size at most, in bytes)."""
    changed = False
    name = span.name
    if len(name) > limit:
        name, changed = name[:limit], True
    size = _SPAN + _FIELD + _bytes(name) + _trace_state_size(span)

    status = span.status
    description = status.description if status is not None else None
    if description:
        if len(description) > limit:
            status, changed = Status(status.status_code, description[:limit]), True
        size += _FIELD + _bytes(status.description or "")

    attributes, attributes_size, attributes_out = _attributes(span.attributes, limit, keep)
    size += attributes_size
    changed = changed or attributes is not None

    events: list[Event] = []
    all_events = span.events
    kept_events = all_events if keep is None else all_events[max(0, len(all_events) - keep) :]
    for event in kept_events:
        event_name = event.name
        cut_name = event_name if len(event_name) <= limit else event_name[:limit]
        event_attributes, event_size, event_out = _attributes(event.attributes, limit, keep)
        size += _EVENT + _FIELD + _bytes(cut_name) + event_size
        if event_attributes is not None or cut_name is not event_name:
            changed = True
            event = _CutEvent(
                cut_name,
                event_attributes if event_attributes is not None else event.attributes,
                event.timestamp,
                event.dropped_attributes + event_out,
            )
        events.append(event)

    links: list[Link] = []
    all_links = span.links
    for link in all_links if keep is None else all_links[:keep]:
        link_attributes, link_size, link_out = _attributes(link.attributes, limit, keep)
        state = link.context.trace_state
        size += _LINK + link_size
        if state:
            size += _FIELD + sum(_bytes(k) + _bytes(v) + 2 for k, v in state.items())
        if link_attributes is not None:
            changed = True
            link = _CutLink(link, link_attributes, link.dropped_attributes + link_out)
        links.append(link)

    events_out = len(all_events) - len(events)
    links_out = len(all_links) - len(links)
    if not (changed or attributes_out or events_out or links_out):
        return span, size
    dropped = (
        span.dropped_attributes + attributes_out,
        span.dropped_events + events_out,
        span.dropped_links + links_out,
    )
    cut_attributes = attributes if attributes is not None else span.attributes
    return _CutSpan(span, name, cut_attributes, events, links, status, dropped), size


def _shrunk(span: ReadableSpan, limit: int, room: int) -> tuple[ReadableSpan | None, int]:
    """``span`` cut further until its size is within ``room``; ``None`` if it cannot be."""
    fitted, size = fit_span(span, limit)
    while size > room and limit > MIN_LENGTH:
        limit = max(MIN_LENGTH, limit // 4)
        fitted, size = fit_span(span, limit)
    most = max(
        len(span.attributes or ()),
        len(span.events),
        len(span.links),
        *(len(event.attributes or ()) for event in span.events),
        *(len(link.attributes or ()) for link in span.links),
    )
    keep = most
    while size > room and keep > 0:
        keep //= 2
        fitted, size = fit_span(span, limit, keep)
    return (fitted, size) if size <= room else (None, size)


def _attributes_size(attributes: Mapping[str, Any] | None) -> int:
    """The encoded size (at most) of attributes sent as they are (a resource's, a scope's)."""
    if not attributes:
        return 0
    return sum(
        _PAIR + _bytes(str(key)) + _value(str(key), value, 1 << 62, 0)[1]
        for key, value in attributes.items()
    )


class SizeLimits:
    """Cuts spans to the length limit and groups them into requests within the byte cap.

    Args:
        length_limit: The longest string (in characters) a span may carry.
        max_request_bytes: The largest request (protobuf-encoded, before compression).
    """

    def __init__(self, length_limit: int, max_request_bytes: int) -> None:
        self.length_limit = length_limit
        self.max_request_bytes = max_request_bytes

    def split(
        self, spans: Sequence[ReadableSpan]
    ) -> tuple[list[list[ReadableSpan]], list[ReadableSpan]]:
        """``spans`` fitted to the limit, in requests each within the cap, in order; and
        the spans that cannot fit in any request (left out of the requests)."""
        too_large: list[ReadableSpan] = []
        return list(self._requests(spans, too_large)), too_large

    def _requests(
        self, spans: Sequence[ReadableSpan], too_large: list[ReadableSpan]
    ) -> Iterator[list[ReadableSpan]]:
        cap = self.max_request_bytes
        limit = self.length_limit
        groups: dict[tuple[int, int], int] = {}  # (resource, scope) ids -> their size
        current: list[ReadableSpan] = []
        in_current: set[tuple[int, int]] = set()
        used = 0
        for span in spans:
            fitted, size = fit_span(span, limit)
            group = (id(span.resource), id(span.instrumentation_scope))
            frame = groups.get(group)
            if frame is None:
                frame = groups[group] = self._group_size(span)
            if frame + size > cap:
                # An absurdly large resource (over 3/4 of the cap, sent whole with
                # each request) leaves spans a quarter of the cap: the collector decides.
                shrunk, size = _shrunk(span, limit, max(cap - frame, cap // 4))
                if shrunk is None:
                    too_large.append(span)
                    continue
                fitted = shrunk
            extra = size if group in in_current else size + frame
            if current and used + extra > cap:
                yield current
                current, in_current, used = [], set(), 0
                extra = size + frame
            current.append(fitted)
            in_current.add(group)
            used += extra
        if current:
            yield current

    @staticmethod
    def _group_size(span: ReadableSpan) -> int:
        """The encoded size (at most) of the resource and scope a span is sent under."""
        size = _GROUP + _attributes_size(span.resource.attributes)
        size += _FIELD + _bytes(span.resource.schema_url or "")
        scope = span.instrumentation_scope
        if scope is not None:
            size += _FIELD * 3 + _bytes(scope.name) + _bytes(scope.version or "")
            size += _bytes(scope.schema_url or "")
            size += _attributes_size(getattr(scope, "attributes", None))
        return size
