"""obskit's fast span start/end (obskit/_fast/spans.py) exports exactly what the SDK path exports.

Each test makes one span through the fast path and one through ``tracer.start_span`` of
the same obskit tracer, under the same parent, and compares them field by field and as
encoded OTLP protobuf (ids and timestamps, random by nature, are compared separately).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

import obskit
from obskit._fast import spans as _spans
from obskit._fast import status


@pytest.fixture(autouse=True)
def _accelerators_on() -> None:
    """These tests compare the fast path with the SDK's: it must be on (whatever the
    environment asks for the rest of the suite)."""
    status.decide(True)


@pytest.fixture
def accelerated() -> None:
    """Skip, with the reason its check gives, where the spans accelerator cannot be on
    with the installed SDK (e.g. opentelemetry-sdk 1.27 lacks the private names it
    builds on): the test exercises the accelerator itself. Tests without this fixture
    run on every version, through whichever path serves them."""
    (spans_status,) = (each for each in status.statuses() if each.path == "spans")
    if not spans_status.enabled:
        pytest.skip(f"the spans accelerator is off here: {spans_status.reason}")


#: For a test of the accelerator itself (see :func:`accelerated`).
needs_accelerator = pytest.mark.usefixtures("accelerated")


ATTRIBUTES: dict[str, Any] = {
    "code.function.name": "tests.test_fastspan.work",
    "code.file.path": __file__,
    "code.line.number": 42,
    "tier": "gold",
    "ratio": 0.5,
    "flags": [True, False],
}


@pytest.fixture
def setup(spans: Callable[..., InMemorySpanExporter]) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """obskit's SDK tracer and an in-memory exporter on its provider."""
    exporter = spans(
        service_name="fastspan", traces_exporter="none", log_level="warning", fast_paths=True
    )
    handle = obskit._lifecycle.runtime.current()
    assert handle is not None
    assert handle.tracer is not None
    return handle.tracer, exporter


def _parent(
    sampled: bool, remote: bool = True, trace_id: int = 0x4BF92F3577B34DA6A3CE929D0E0E4736
) -> Any:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(
        trace_id,
        0x00F067AA0BA902B7,
        is_remote=remote,
        trace_flags=flags,
        trace_state=TraceState([("vendor", "v1")]),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _both(tracer: Any, parent: Any, name: str = "work") -> tuple[Any, Any]:
    """(fast span, SDK span) started under ``parent`` and not yet ended."""
    fast = _spans.fast_tracer(tracer)
    assert fast is not None
    trusted = _spans.trusted_attributes(tracer, ATTRIBUTES)
    assert trusted is not None
    token = context.attach(parent) if parent is not None else None
    try:
        quick = fast.start(name, trusted, trusted=True)
        slow = tracer.start_span(name, attributes=ATTRIBUTES)
    finally:
        if token is not None:
            context.detach(token)
    assert quick is not None
    return quick, slow


def _normalised_otlp(span: ReadableSpan) -> bytes:
    """The span encoded as an OTLP export request, ids and timestamps zeroed."""
    request = encode_spans([span])
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for encoded in scope_spans.spans:
                encoded.trace_id = b""
                encoded.span_id = b""
                encoded.start_time_unix_nano = 0
                encoded.end_time_unix_nano = 0
                for event in encoded.events:
                    event.time_unix_nano = 0
    return bytes(request.SerializeToString())


def _assert_same_content(quick: ReadableSpan, slow: ReadableSpan) -> None:
    assert quick.name == slow.name
    assert quick.kind == slow.kind
    assert quick.parent == slow.parent
    assert dict(quick.attributes or {}) == dict(slow.attributes or {})
    assert list(quick.attributes or {}) == list(slow.attributes or {})  # same order
    assert quick.dropped_attributes == slow.dropped_attributes
    assert (quick.status.status_code, quick.status.description) == (
        slow.status.status_code,
        slow.status.description,
    )
    assert [(e.name, dict(e.attributes or {})) for e in quick.events] == [
        (e.name, dict(e.attributes or {})) for e in slow.events
    ]
    assert quick.links == slow.links
    assert quick.resource == slow.resource
    assert quick.instrumentation_scope == slow.instrumentation_scope
    assert quick.context is not None
    assert slow.context is not None
    assert quick.context.trace_flags == slow.context.trace_flags
    assert quick.context.trace_state == slow.context.trace_state
    assert quick.context.is_remote is slow.context.is_remote is False
    assert quick.context.is_valid
    assert quick.context.span_id != slow.context.span_id
    assert quick.start_time is not None
    assert quick.end_time is not None
    assert quick.start_time <= quick.end_time
    assert _normalised_otlp(quick) == _normalised_otlp(slow)


@needs_accelerator
def test_root_span_matches_the_sdk_span(setup: tuple[Any, InMemorySpanExporter]) -> None:
    """A root span from the fast path exports the same content as one from tracer.start_span."""
    tracer, exporter = setup
    quick, slow = _both(tracer, None)
    _spans.fast_tracer(tracer).end(quick)  # type: ignore[union-attr]
    slow.end()
    first, second = exporter.get_finished_spans()
    assert first.context.span_id == quick.get_span_context().span_id
    _assert_same_content(first, second)
    assert first.parent is None
    assert first.context.trace_id != second.context.trace_id  # each root starts a trace


@needs_accelerator
@pytest.mark.parametrize("remote", [True, False])
def test_child_of_a_sampled_parent_matches_the_sdk_span(
    setup: tuple[Any, InMemorySpanExporter], remote: bool
) -> None:
    """Under a sampled parent both paths keep its trace id, trace state and random flag."""
    tracer, exporter = setup
    quick, slow = _both(tracer, _parent(sampled=True, remote=remote))
    _spans.fast_tracer(tracer).end(quick)  # type: ignore[union-attr]
    slow.end()
    first, second = exporter.get_finished_spans()
    _assert_same_content(first, second)
    assert first.context.trace_id == second.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert first.parent is not None
    assert first.parent.span_id == 0x00F067AA0BA902B7


@needs_accelerator
def test_error_span_with_exception_event_matches_the_sdk_span(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """An exception event and ERROR status recorded on both spans export identically."""
    tracer, exporter = setup
    quick, slow = _both(tracer, None)
    error = ValueError("bad input")
    for span in (quick, slow):
        span.record_exception(error, escaped=True)
        span.set_status(Status(StatusCode.ERROR, "ValueError: bad input"))
    _spans.fast_tracer(tracer).end(quick)  # type: ignore[union-attr]
    slow.end()
    first, second = exporter.get_finished_spans()
    _assert_same_content(first, second)
    assert first.events[0].name == "exception"


def test_traced_call_exports_what_the_sdk_path_exports(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """A @traced call's span equals the SDK span made with the same name and code.* attributes."""
    tracer, exporter = setup

    def work() -> int:
        return 1

    decorated = obskit.traced(work)
    decorated()
    (quick,) = exporter.get_finished_spans()
    assert quick.attributes is not None
    slow = tracer.start_span(quick.name, attributes=dict(quick.attributes))
    slow.end()
    _assert_same_content(quick, exporter.get_finished_spans()[1])


@needs_accelerator
def test_unsampled_parent_gives_the_same_non_recording_span(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """Under an unsampled parent both paths return a non-recording span with equal trace fields."""
    tracer, exporter = setup
    quick, slow = _both(tracer, _parent(sampled=False))
    assert type(quick) is type(slow) is NonRecordingSpan
    a, b = quick.get_span_context(), slow.get_span_context()
    assert (a.trace_id, a.trace_flags, a.trace_state, a.is_remote) == (
        b.trace_id,
        b.trace_flags,
        b.trace_state,
        b.is_remote,
    )
    assert a.is_valid
    assert a.span_id != b.span_id
    quick.end()
    slow.end()
    assert exporter.get_finished_spans() == ()


@needs_accelerator
@pytest.mark.parametrize("trace_id", [0x1, 0x4BF92F3577B34DA6FFFFFFFFFFFFFFFF])
def test_ratio_sampler_decides_like_the_sdk(
    spans: Callable[..., InMemorySpanExporter], trace_id: int
) -> None:
    """With traceidratio (not parent-based) the fast path samples the trace ids the SDK samples."""
    spans(
        service_name="fastspan",
        traces_exporter="none",
        traces_sampler="traceidratio",
        traces_sampler_arg=0.5,
        fast_paths=True,
    )
    tracer = obskit._lifecycle.runtime.current().tracer  # type: ignore[union-attr]
    quick, slow = _both(tracer, _parent(sampled=False, trace_id=trace_id))
    assert quick.get_span_context().trace_flags == slow.get_span_context().trace_flags
    assert quick.is_recording() == slow.is_recording()


@needs_accelerator
def test_a_processor_added_later_sees_on_start_like_with_the_sdk(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """A processor with an on_start hook, added after init(), is called by the fast path too."""
    tracer, _ = setup
    started: list[tuple[str, Any]] = []

    class Recorder(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            started.append((span.name, parent_context))

    obskit._lifecycle.runtime.current().tracer_provider.add_span_processor(Recorder())  # type: ignore[union-attr]
    quick, slow = _both(tracer, None)
    assert started == [("work", None), ("work", None)]
    quick.end()
    slow.end()


def test_a_replaced_sampler_is_honoured(setup: tuple[Any, InMemorySpanExporter]) -> None:
    """If the tracer's sampler is swapped, @traced uses the SDK path and the new sampler decides."""
    tracer, exporter = setup
    calls: list[str] = []

    class Counting(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            calls.append(kwargs.get("name") or args[2])
            return SamplingResult(Decision.DROP)

        def get_description(self) -> str:
            return "Counting"

    @obskit.traced(name="swapped")
    def work() -> None:
        pass

    original = tracer.sampler
    tracer.sampler = Counting()
    try:
        work()
    finally:
        tracer.sampler = original
    assert calls == ["swapped"]
    assert exporter.get_finished_spans() == ()


def test_no_fast_path_for_a_foreign_tracer() -> None:
    """A tracer whose provider has a sampler obskit does not build gets no fast path."""

    class Custom(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "Custom"

    provider = TracerProvider(sampler=Custom(), shutdown_on_exit=False)
    assert _spans.fast_tracer(provider.get_tracer("x")) is None
    assert _spans.fast_tracer(trace.NoOpTracer()) is None


@needs_accelerator
def test_fast_path_for_a_tracer_with_a_sampler_obskit_builds() -> None:
    """A plain SDK tracer whose sampler is one obskit builds (ALWAYS_ON) gets the fast path."""
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    assert _spans.fast_tracer(provider.get_tracer("y")) is not None


def test_the_accelerator_is_off_only_where_the_sdk_lacks_its_private_names() -> None:
    """Where the SDK has the private names the accelerator builds on, its check turns it
    on: the skips of the accelerator's own tests happen only on SDKs it cannot run on."""
    (spans_status,) = (each for each in status.statuses() if each.path == "spans")
    if _spans._AVAILABLE:
        assert (spans_status.enabled, spans_status.reason) == (True, "on")
    else:
        assert not spans_status.enabled
        assert spans_status.reason.startswith("opentelemetry-sdk lacks the private names")


@needs_accelerator
def test_attributes_the_sdk_would_truncate_are_not_trusted(
    setup: tuple[Any, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """Values the SDK truncates or rejects (with a warning) keep the SDK's per-call validation."""
    tracer, _ = setup
    limit = tracer._span_limits.max_span_attribute_length
    assert _spans.trusted_attributes(tracer, {"ok": "short", "seq": [1, 2]}) == {
        "ok": "short",
        "seq": (1, 2),
    }
    assert _spans.trusted_attributes(tracer, {"obj": object()}) is None
    assert _spans.trusted_attributes(tracer, {"": "empty key"}) is None
    if limit is not None:
        assert _spans.trusted_attributes(tracer, {"long": "x" * (limit + 1)}) is None


@needs_accelerator
def test_ending_twice_warns_like_the_sdk(
    setup: tuple[Any, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """A second end() of a fast-path span logs the SDK's warning and exports the span once."""
    tracer, exporter = setup
    quick, slow = _both(tracer, None)
    fast = _spans.fast_tracer(tracer)
    assert fast is not None
    fast.end(quick)
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        fast.end(quick)
    assert "Calling end() on an ended span." in caplog.text
    assert not quick._lock.locked()  # released on the early return too
    slow.end()
    assert len(exporter.get_finished_spans()) == 2


@needs_accelerator
def test_span_kind_and_explicit_context_follow_the_sdk(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """A SERVER span under an explicit (extracted) context matches start_span(context=...)."""
    tracer, exporter = setup
    fast = _spans.fast_tracer(tracer)
    assert fast is not None
    parent = _parent(sampled=True)
    quick = fast.start("GET /", ATTRIBUTES, kind=SpanKind.SERVER, context=parent)
    slow = tracer.start_span("GET /", context=parent, kind=SpanKind.SERVER, attributes=ATTRIBUTES)
    assert quick is not None
    fast.end(quick)
    slow.end()
    first, second = exporter.get_finished_spans()
    _assert_same_content(first, second)
    assert first.kind is SpanKind.SERVER


def test_start_span_helper_validates_attributes_like_the_sdk(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """start_span()/end_span() (for HTTP server spans) store per-call attributes as the SDK does."""
    tracer, exporter = setup
    parent = _parent(sampled=True)
    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "url.path": "/orders/7",
        "http.route": ["a", "b"],
        "": "empty keys are dropped",
        "count": 3,
    }
    quick = _spans.start_span(
        tracer, "GET /orders", kind=SpanKind.SERVER, context=parent, attributes=attributes
    )
    slow = tracer.start_span(
        "GET /orders", context=parent, kind=SpanKind.SERVER, attributes=attributes
    )
    assert type(quick) is type(slow)
    _spans.end_span(quick)
    _spans.end_span(slow)
    first, second = exporter.get_finished_spans()
    _assert_same_content(first, second)  # dropped_attributes too (1.27 counts no empty key)
    assert "" not in (first.attributes or {})


@needs_accelerator
def test_plain_fit_accepts_only_what_the_sdk_stores_unchanged(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """HTTP server attributes (str/int within the limits) are passed as trusted; others not."""
    tracer, _ = setup
    assert _spans.plain_fit(tracer, {"url.path": "/a", "server.port": 80})
    assert not _spans.plain_fit(tracer, {"flag": True, "x": 1.5} | {"seq": ["a"]})
    assert not _spans.plain_fit(tracer, {"value": None})
    limit = tracer._span_limits.max_span_attribute_length
    if limit is not None:
        assert not _spans.plain_fit(tracer, {"url.path": "x" * (limit + 1)})
    maxlen = tracer._span_limits.max_span_attributes
    assert not _spans.plain_fit(tracer, {f"k{n}": n for n in range(maxlen + 1)})


@needs_accelerator
@pytest.mark.parametrize("end", [False, True])
@pytest.mark.parametrize("sampled", [True, False])
def test_rename_and_set_equals_update_name_and_set_attribute(
    setup: tuple[Any, InMemorySpanExporter], sampled: bool, end: bool
) -> None:
    """The server span's end-of-request name and attributes (and, with ``end``, its end):
    fast and SDK spans export the same."""
    tracer, exporter = setup
    quick, slow = _both(tracer, _parent(sampled=sampled))
    # An attribute already present moves to the end, as BoundedAttributes does.
    attributes = {
        "http.route": "/orders/<id>",
        "tier": "platinum",
        "http.response.status_code": 503,
    }
    done = _spans.rename_and_set(quick, "GET /o/<id>", attributes, end=end)
    assert done is (type(quick) is not NonRecordingSpan)
    slow.update_name("GET /o/<id>")
    for key, value in attributes.items():
        slow.set_attribute(key, value)
    if end and done:
        assert quick.end_time is not None
        assert quick.start_time <= quick.end_time
        assert len(exporter.get_finished_spans()) == 1  # handed to the processors
        with pytest.raises(TypeError):  # ended: attributes frozen, as end() leaves them
            quick._attributes["late"] = 1
    else:
        quick.end()
    slow.end()
    if sampled:
        first, second = exporter.get_finished_spans()
        _assert_same_content(first, second)
        assert first.name == "GET /o/<id>"


@needs_accelerator
def test_rename_and_set_leaves_unusual_cases_to_the_sdk(
    setup: tuple[Any, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended spans, values needing cleaning and wrapped SDK methods: nothing done, False."""
    tracer, _ = setup
    quick, slow = _both(tracer, None)
    assert not _spans.rename_and_set(quick, "n", {"value": 1.5})
    assert not _spans.rename_and_set(quick, "n", {"": "empty key"})
    limit = tracer._span_limits.max_span_attribute_length
    if limit is not None:
        assert not _spans.rename_and_set(quick, "n", {"long": "x" * (limit + 1)})
    from opentelemetry.sdk.trace import Span as SdkSpan

    original = SdkSpan.set_attribute
    monkeypatch.setattr(SdkSpan, "set_attribute", lambda *a: original(*a))
    assert not _spans.rename_and_set(quick, "n", {"ok": 1})
    monkeypatch.undo()
    assert _spans.rename_and_set(quick, "renamed", {"ok": 1})
    quick.end()
    assert not _spans.rename_and_set(quick, "late", {"ok": 2})
    assert not quick._lock.locked()  # released on the early return too
    assert not quick._attributes._lock.locked()
    assert quick.name == "renamed"
    assert quick.attributes["ok"] == 1
    slow.end()


@needs_accelerator
def test_rename_and_set_and_end_leaves_unusual_spans_to_the_sdk(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """With ``end``: a span with end-of-span metrics to record, or one never started, is
    left as it was (False), for the SDK's own calls; an ended one too, locks released."""
    tracer, exporter = setup
    quick, slow = _both(tracer, _parent(sampled=True))
    recorded: list[Any] = []
    quick.__dict__["_record_end_metrics"] = lambda *args: recorded.append(args)
    assert not _spans.rename_and_set(quick, "n", {"ok": 1}, end=True)
    assert quick.end_time is None
    assert quick.name != "n"
    assert "ok" not in quick.attributes
    quick.end()
    assert recorded  # the SDK's end() ran and recorded them
    slow._start_time = None  # (not started: end() raises in the SDK)
    assert not _spans.rename_and_set(slow, "n", {"ok": 1}, end=True)
    assert slow.name != "n"
    assert not slow._lock.locked()
    slow._start_time = 1
    assert _spans.rename_and_set(slow, "n", {"ok": 1}, end=True)
    assert not _spans.rename_and_set(slow, "again", {"ok": 2}, end=True)
    assert not slow._lock.locked()
    assert not slow._attributes._lock.locked()
    assert [s.name for s in exporter.get_finished_spans()][-1] == "n"


@needs_accelerator
def test_rename_and_set_on_a_full_span_evicts_like_the_sdk(
    setup: tuple[Any, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """At the attribute count limit the oldest attribute goes, counted and warned, as in the SDK."""
    tracer, exporter = setup
    quick, slow = _both(tracer, _parent(sampled=True))
    maxlen = tracer._span_limits.max_span_attributes
    for span in (quick, slow):
        for n in range(maxlen - len(ATTRIBUTES)):
            span.set_attribute(f"filler.{n}", n)
    attributes = {"http.route": "/o/<id>", "http.response.status_code": 200}
    with caplog.at_level(logging.WARNING):
        assert _spans.rename_and_set(quick, "GET /o/<id>", attributes)
        fast_warnings = len(caplog.records)
        slow.update_name("GET /o/<id>")
        for key, value in attributes.items():
            slow.set_attribute(key, value)
    assert fast_warnings == len(caplog.records) - fast_warnings == 2
    quick.end()
    slow.end()
    first, second = exporter.get_finished_spans()
    _assert_same_content(first, second)
    assert first.dropped_attributes == 2


def test_with_span_equals_set_span_in_context() -> None:
    """A copy of the given context holding the span, which is left unchanged: as the API's."""
    span = NonRecordingSpan(SpanContext(1, 2, is_remote=False))
    parent = context.set_value("other", "kept")
    ours, theirs = _spans.with_span(parent, span), trace.set_span_in_context(span, parent)
    assert type(ours) is type(theirs) is context.Context
    assert ours == theirs
    assert ours is not parent
    assert trace.get_current_span(ours) is span
    assert ours["other"] == "kept"
    assert trace.get_current_span(parent) is not span
    nothing = context.Context()
    empty = _spans.with_span(nothing, span)
    assert type(empty) is context.Context
    assert empty == trace.set_span_in_context(span, context.Context())
    assert nothing == {}  # the empty parent is left empty too


def test_attach_and_detach_equal_the_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``attach``/``detach`` make a context current and restore the previous one, also
    after the runtime context was replaced (then through the API), without an error."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    span = NonRecordingSpan(SpanContext(7, 8, False, TraceFlags(TraceFlags.SAMPLED)))
    parent = trace.set_span_in_context(trace.INVALID_SPAN, context.set_value("k", "v"))
    built = trace.set_span_in_context(span, parent)
    before = context.get_current()
    token = _spans.attach(built)
    assert trace.get_current_span() is span
    assert context.get_value("k") == "v"
    _spans.detach(token)
    assert context.get_current() == before
    monkeypatch.setattr(context, "_RUNTIME_CONTEXT", ContextVarsRuntimeContext())
    with caplog.at_level(logging.ERROR):
        token = _spans.attach(built)
        assert trace.get_current_span() is span
        _spans.detach(token)
        assert trace.get_current_span() is trace.INVALID_SPAN
    assert not caplog.records


@needs_accelerator
def test_fast_spans_have_their_own_event_and_link_lists(
    setup: tuple[Any, InMemorySpanExporter],
) -> None:
    """Each span's event and link deques are its own (copies of an empty one), with the
    SDK's limits as their maxlen: an event on one span is not on the next."""
    tracer, _ = setup
    first, _ = _both(tracer, None)
    second, _ = _both(tracer, None)
    limits = tracer._span_limits
    for span in (first, second):
        assert span._events._dq.maxlen == limits.max_events
        assert span._links._dq.maxlen == limits.max_links
    assert first._events._dq is not second._events._dq
    assert first._links._dq is not second._links._dq
    first.add_event("only on the first")
    assert [event.name for event in first.events] == ["only on the first"]
    assert list(second.events) == []
    first.end()
    second.end()
