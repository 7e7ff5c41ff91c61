"""What profiles add to spans (with ``profiles`` on), as the first span processor:

- a root span (no parent, or a parent from another process) carries
  ``pyroscope.profile.id``, its own span id: Grafana's "traces to profiles" link looks
  for it and finds the samples labelled with that ``span_id``;
- a span that lasted ``profile_slow_span`` seconds or more gets a ``profile.hot_frames``
  event with what the sampler saw while it ran: ``profile.samples`` (how many samples),
  ``profile.hot_frames`` (the innermost frames sampled most, as ``function (file:line)
  N samples``) and ``profile.hot_stack`` (the stack sampled most, innermost first).

An ended span is read-only, so :class:`HotFramesProcessor` wraps obskit's exporting
processor and hands it a copy of a slow span with the event added (its count of dropped
events, if any, is not carried over). Spans that other processors export (added to the
provider by hand) do not get the event.
"""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._profiles import install as _install
from obskit._profiles.sampler import format_frame
from obskit._profiles.window import Frame, Stack

__all__ = [
    "HOT_FRAMES_EVENT",
    "PROFILE_ID",
    "HotFramesProcessor",
    "ProfileSpanProcessor",
    "hot_frames_attributes",
]

PROFILE_ID = "pyroscope.profile.id"
#: The last slow spans' events, by span id: each exporting processor of a provider (and
#: ``obskit.testing.capture()``'s) hands on the same one (the samples are read once).
RECENT_EVENTS = 256
_recent: dict[int, Event] = {}
HOT_FRAMES_EVENT = "profile.hot_frames"
#: Hot frames listed in the event, and frames of the hot stack.
TOP_FRAMES = 5
STACK_FRAMES = 20


class ProfileSpanProcessor(SpanProcessor):
    """Root spans' ``pyroscope.profile.id`` (the first span processor)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            parent = span.parent
            if parent is None or parent.is_remote:
                context = span.get_span_context()
                span.set_attribute(PROFILE_ID, format(context.span_id, "016x"))
        except Exception as error:
            _internal_errors.report("profiles", error)


class HotFramesProcessor(SpanProcessor):
    """Wraps the exporting processor: hands it each ended span, a slow one as a copy with
    its ``profile.hot_frames`` event added (an ended span is read-only); every ended span
    frees the samples kept for it."""

    def __init__(self, processor: SpanProcessor, slow_after: float) -> None:
        self.processor = processor
        self.slow_after_ns = int(slow_after * 1e9)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            span = self._with_hot_frames(span)
        except Exception as error:
            with contextlib.suppress(Exception):
                _internal_errors.report("profiles", error)
        self.processor.on_end(span)

    def _with_hot_frames(self, span: ReadableSpan) -> ReadableSpan:
        sampler = _install.sampler()
        context = span.context
        if sampler is None or context is None:
            return span
        start, end = span.start_time, span.end_time
        event = _recent.get(context.span_id)  # (another exporting processor's, just now)
        if event is None:
            samples = sampler.span_samples(context.span_id)
            if not samples or start is None or end is None or end - start < self.slow_after_ns:
                return span
            event = Event(HOT_FRAMES_EVENT, hot_frames_attributes(samples), end)
            if len(_recent) >= RECENT_EVENTS:
                del _recent[next(iter(_recent))]
            _recent[context.span_id] = event
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=(*span.events, event),
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=start,
            end_time=end,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)


def hot_frames_attributes(samples: dict[Stack, int]) -> dict[str, Any]:
    """The event's attributes for the stacks sampled in one span."""
    leaves: dict[Frame, int] = {}
    for stack, count in samples.items():
        if stack:
            leaves[stack[0]] = leaves.get(stack[0], 0) + count
    top = sorted(leaves.items(), key=lambda item: -item[1])[:TOP_FRAMES]
    hot_stack = max(samples.items(), key=lambda item: item[1])[0]
    return {
        "profile.samples": sum(samples.values()),
        "profile.hot_frames": [f"{format_frame(frame)} {count} samples" for frame, count in top],
        "profile.hot_stack": "\n".join(format_frame(frame) for frame in hot_stack[:STACK_FRAMES]),
    }
