"""Bounded export sizes: every exported string cut to the length limit, every export
request within ``export_max_request_bytes``, and a huge span never taking the spans
of its batch with it — against real OTLP receivers that refuse bodies above 4 MiB
(HTTP, answering 413) or messages above 4 MiB (gRPC's default)."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

import obskit
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.size_limits import SizeLimits, cut_stacktrace, fit_span
from tests.receivers import OtlpGrpcReceiver, OtlpHttpReceiver

MiB = 1024 * 1024
#: The request-body limit of the receivers (the OpenTelemetry Collector's gRPC default).
COLLECTOR_LIMIT = 4 * MiB
FAST_PATHS = pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "sdk"])


@pytest.fixture
def limited_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver(max_body_bytes=COLLECTOR_LIMIT, keep_bodies=True)
    yield receiver
    receiver.close()


def _dropped(reason: str) -> float:
    return _self_stats.value("obskit_dropped", signal="traces", reason=reason)


def _pb_spans(bodies: list[bytes]) -> list[PbSpan]:
    """Every span of the accepted requests, as the protobuf messages that arrived."""
    found: list[PbSpan] = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                found.extend(scope_spans.spans)
    return found


def _attribute(attributes: Any, key: str) -> Any:
    (value,) = [item.value for item in attributes if item.key == key]
    return getattr(value, value.WhichOneof("value"))


@FAST_PATHS
def test_a_10_mb_exception_costs_no_innocent_span(
    limited_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch, fast_paths: bool
) -> None:
    """One span with a 10 MB exception message among 511 normal spans, to a collector
    refusing bodies over 4 MiB: all 512 arrive (the big one cut to the limit), no body
    is over the cap, nothing is refused or dropped."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # one batch of 512
    handle = obskit.init(
        service_name="sizes", otlp_endpoint=limited_receiver.endpoint, fast_paths=fast_paths
    )
    failed = _dropped("export_failed")

    @obskit.traced(name="huge")
    def huge() -> None:
        raise ValueError("m" * 10_000_000)

    @obskit.traced(name="innocent")
    def innocent(n: int) -> int:
        return n

    for n in range(255):
        innocent(n)
    with pytest.raises(ValueError, match=r"^mmm"):
        huge()
    for n in range(256):
        innocent(n)
    assert handle.force_flush(timeout=60)
    spans = limited_receiver.wait_for(512)
    names = [span.name for span in spans]
    assert names.count("innocent") == 511
    assert names.count("huge") == 1
    assert limited_receiver.refused == 0
    assert max(limited_receiver.body_sizes) <= handle.settings.export_max_request_bytes
    (big,) = [s for s in _pb_spans(limited_receiver.bodies) if s.name == "huge"]
    (event,) = big.events
    assert _attribute(event.attributes, "exception.message") == "m" * 4096
    assert _dropped("export_failed") == failed
    print(
        f"\n{len(limited_receiver.body_sizes)} request(s), largest"
        f" {max(limited_receiver.body_sizes)} bytes, {len(spans)} spans"
    )


def _deep(n: int) -> None:
    """Raise ValueError("deep end") under ``n`` distinct frames (Python folds repeated
    frames of one function into a single line)."""
    source = "".join(f"def f{i}():\n    f{i + 1}()\n" for i in range(n))
    source += f"def f{n}():\n    raise ValueError('deep end')\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "/srv/app/service/handlers.py", "exec"), namespace)
    namespace["f0"]()


@FAST_PATHS
def test_every_kind_of_string_is_cut_to_the_limit(
    limited_receiver: OtlpHttpReceiver, fast_paths: bool
) -> None:
    """Span name, span attribute, event name and attribute, status description,
    exception message and stacktrace, and link attribute each arrive cut to the limit;
    the stacktrace keeps its head and tail and says how much was cut between them."""
    limit = 1000
    handle = obskit.init(
        service_name="sizes",
        otlp_endpoint=limited_receiver.endpoint,
        attribute_value_length_limit=limit,
        fast_paths=fast_paths,
    )
    long = {kind: kind[0] * 100_000 for kind in ("name", "attr", "event", "value", "desc")}
    linked = SpanContext(0x1, 0x2, is_remote=True, trace_flags=TraceFlags(1))
    tracer = trace.get_tracer("sizes")
    with tracer.start_as_current_span(
        long["name"], links=[Link(linked, {"link": "l" * 100_000})]
    ) as span:
        span.set_attribute("attr", long["attr"])
        span.add_event(long["event"], {"value": long["value"]})
        span.record_exception(ValueError("x" * 100_000))
        try:
            _deep(60)
        except ValueError as error:
            span.record_exception(error)
            stacktrace = "".join(traceback.format_exception(error))
        span.set_status(Status(StatusCode.ERROR, long["desc"]))
    assert handle.force_flush(timeout=30)
    limited_receiver.wait_for(1)
    (sent,) = _pb_spans(limited_receiver.bodies)
    assert sent.name == long["name"][:limit]
    assert _attribute(sent.attributes, "attr") == long["attr"][:limit]
    event, message, deep = sent.events
    assert event.name == long["event"][:limit]
    assert _attribute(event.attributes, "value") == long["value"][:limit]
    assert _attribute(message.attributes, "exception.message") == "x" * limit
    assert len(_attribute(message.attributes, "exception.stacktrace")) <= limit
    assert sent.status.message == long["desc"][:limit]
    assert _attribute(sent.links[0].attributes, "link") == "l" * limit
    cut = _attribute(deep.attributes, "exception.stacktrace")
    assert len(stacktrace) > limit >= len(cut)
    assert cut.startswith("Traceback (most recent call last):\n")
    assert cut.endswith("ValueError: deep end\n")
    head, tail = cut.split("characters cut ...]\n")
    assert stacktrace.startswith(head[: head.rindex("[...")])
    assert stacktrace.endswith(tail)
    assert sent.dropped_attributes_count == 0
    assert sent.dropped_events_count == 0


def _mid_size_spans(count: int, tracer_name: str = "sizes") -> None:
    tracer = trace.get_tracer(tracer_name)
    for n in range(count):
        with tracer.start_as_current_span(f"mid-{n}") as span:
            for k in range(16):
                span.set_attribute(f"k{k}", f"{n}-{k}-" + "v" * 1000)


@FAST_PATHS
def test_a_batch_larger_than_the_cap_is_split_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch, fast_paths: bool
) -> None:
    """500 spans of 16 KB (8 MB) under a 1 MiB cap, to a collector refusing bodies over
    1 MiB: several requests, none over the cap, all 500 spans arrive."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    receiver = OtlpHttpReceiver(max_body_bytes=MiB)
    try:
        handle = obskit.init(
            service_name="sizes",
            otlp_endpoint=receiver.endpoint,
            export_max_request_bytes=MiB,
            fast_paths=fast_paths,
        )
        _mid_size_spans(500)
        assert handle.force_flush(timeout=60)
        spans = receiver.wait_for(500)
        assert sorted(span.name for span in spans) == sorted(f"mid-{n}" for n in range(500))
        assert receiver.refused == 0
        assert len(receiver.body_sizes) >= 8
        assert max(receiver.body_sizes) <= MiB
    finally:
        receiver.close()


def test_grpc_requests_stay_under_the_servers_4_mib_message_limit(
    grpc_receiver: OtlpGrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over gRPC, 500 spans of 16 KB reach a server with grpcio's default 4 MiB message
    limit: the batch goes as several messages within the default 3.5 MiB cap."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    handle = obskit.init(
        service_name="sizes", otlp_endpoint=grpc_receiver.endpoint, otlp_protocol="grpc"
    )
    _mid_size_spans(500)
    assert handle.force_flush(timeout=60)
    spans = grpc_receiver.wait_for(500)
    assert len({span.name for span in spans}) == 500
    assert grpc_receiver.requests >= 3


def test_a_collector_with_a_lower_limit_gets_halved_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A collector refusing bodies over 256 KiB (below obskit's cap) answers 413: the
    refused request is halved until its parts fit, and every span arrives."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    receiver = OtlpHttpReceiver(max_body_bytes=256 * 1024)
    try:
        handle = obskit.init(service_name="sizes", otlp_endpoint=receiver.endpoint)
        before = _self_stats.value("obskit_export_errors", signal="traces", reason="http_413")
        dropped = _dropped("too_large")
        _mid_size_spans(100)
        assert handle.force_flush(timeout=60)
        spans = receiver.wait_for(100)
        assert len({span.name for span in spans}) == 100
        refused = _self_stats.value("obskit_export_errors", signal="traces", reason="http_413")
        assert refused - before == receiver.refused >= 1
        assert _dropped("too_large") == dropped
    finally:
        receiver.close()


def test_a_span_the_collector_refuses_alone_is_dropped_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A span larger than the collector accepts (but within obskit's cap) is halved
    down to itself, then dropped and counted as too_large; its batch's other spans
    arrive."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    receiver = OtlpHttpReceiver(max_body_bytes=64 * 1024)
    try:
        handle = obskit.init(service_name="sizes", otlp_endpoint=receiver.endpoint)
        before = _dropped("too_large")
        tracer = trace.get_tracer("sizes")
        for n in range(20):
            with tracer.start_as_current_span(f"small-{n}"):
                pass
        with tracer.start_as_current_span("big") as span:
            for k in range(100):
                span.set_attribute(f"k{k}", "v" * 4000)
        assert handle.force_flush(timeout=60)
        spans = receiver.wait_for(20)
        assert sorted(s.name for s in spans) == sorted(f"small-{n}" for n in range(20))
        assert _dropped("too_large") - before == 1
    finally:
        receiver.close()


@pytest.mark.parametrize(
    "value", [0, 1000, 65_535, -1, 268_435_457, 1.5, True, "abc", "", "3.5MiB"]
)
def test_bad_max_request_bytes_fail_init(value: object) -> None:
    """Each invalid export_max_request_bytes makes init() raise a ConfigError naming it."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(export_max_request_bytes=value)
    assert caught.value.setting == "export_max_request_bytes"


def test_a_bad_max_request_bytes_variable_fails_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad OBSKIT_EXPORT_MAX_REQUEST_BYTES fails init() naming the variable."""
    monkeypatch.setenv("OBSKIT_EXPORT_MAX_REQUEST_BYTES", "4MiB")
    with pytest.raises(obskit.ConfigError, match="OBSKIT_EXPORT_MAX_REQUEST_BYTES"):
        obskit.init()


# --- the size rules, on spans built with the SDK ---------------------------------


def _finished(build: Any) -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource.create({"service.name": "unit"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider.get_tracer("unit", "1.0"))
    return list(exporter.get_finished_spans())


def test_a_span_within_the_limit_is_passed_on_as_it_is() -> None:
    """A span with nothing to cut is the very same object after fitting."""

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("ok", attributes={"a": "x" * 10, "n": 1}) as span:
            span.add_event("e", {"b": "y"})

    (span,) = _finished(build)
    assert fit_span(span, 100)[0] is span


def test_a_cut_span_keeps_everything_but_the_cut() -> None:
    """A cut copy keeps ids, parent, kind, times, resource, scope, event times and the
    SDK's dropped counts."""

    def build(tracer: Any) -> None:
        with (
            tracer.start_as_current_span("parent"),
            tracer.start_as_current_span("c" * 500, kind=trace.SpanKind.CLIENT) as span,
        ):
            span.add_event("e" * 500, {"b": "y"}, timestamp=123)
            for n in range(130):  # 2 over the SDK's count limit
                span.set_attribute(f"k{n}", n)

    child = _finished(build)[0]
    cut, _ = fit_span(child, 100)
    assert cut is not child
    assert cut.name == "c" * 100
    assert (cut.context, cut.parent, cut.kind) == (child.context, child.parent, child.kind)
    assert (cut.start_time, cut.end_time) == (child.start_time, child.end_time)
    assert cut.resource is child.resource
    assert cut.instrumentation_scope == child.instrumentation_scope
    assert dict(cut.attributes or {}) == dict(child.attributes or {})
    assert cut.dropped_attributes == child.dropped_attributes == 2
    assert cut.events[0].name == "e" * 100
    assert cut.events[0].timestamp == 123


def test_the_stacktrace_cut_keeps_head_tail_and_the_count() -> None:
    """A cut stacktrace is within the limit, starts and ends as the original, and its
    marker counts exactly the characters left out."""
    try:
        _deep(200)
    except ValueError as error:
        text = "".join(traceback.format_exception(error))
    for limit in (300, 1000, 4096):
        cut = cut_stacktrace(text, limit)
        assert len(cut) <= limit
        head, rest = cut.split("[... ", 1)
        count, tail = rest.split(" characters cut ...]\n", 1)
        if len(head) + int(count) + len(tail) != len(text):
            head = head[:-1]  # the line break added before the marker
        assert text.startswith(head)
        assert text.endswith(tail)
        assert len(head) + int(count) + len(tail) == len(text)
    assert cut_stacktrace("short", 100) == "short"


def test_an_oversized_span_is_cut_further_to_fit_one_request() -> None:
    """A span bigger than a request after the length limit (128 events of 128
    attributes) is cut further until its encoded size fits, its dropped counts say so."""

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("many") as span:
            for e in range(128):
                span.add_event(f"e{e}", {f"k{k}": "v" * 4096 for k in range(128)})

    (span,) = _finished(build)
    sizes = SizeLimits(4096, 65_536)
    requests, too_large = sizes.split([span])
    assert too_large == []
    ((cut,),) = requests
    assert len(encode_spans([cut]).SerializeToString()) <= 65_536
    assert cut.dropped_events + len(cut.events) == 128


_long = st.builds(
    lambda piece, times: piece * times,
    st.sampled_from(["a", "é", "😀", "\x00", "a😀é"]),
    st.integers(300, 3000),
)
_text = st.text(max_size=100) | _long
_scalar = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.booleans()
_value = _text | _scalar | st.lists(_text, max_size=5) | st.lists(st.integers(0, 9), max_size=5)
_attributes = st.dictionaries(st.text(min_size=1, max_size=40), _value, max_size=8)


@st.composite
def _spans(draw: Any) -> ReadableSpan:
    context = SpanContext(draw(st.integers(1, 2**128 - 1)), draw(st.integers(1, 2**64 - 1)), False)
    events = [
        Event(draw(_text), draw(_attributes), timestamp=draw(st.integers(0, 2**64 - 1)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    links = [Link(context, draw(_attributes)) for _ in range(draw(st.integers(0, 2)))]
    description = draw(st.none() | _text)
    return ReadableSpan(
        draw(_text),
        context=context,
        parent=draw(st.none() | st.just(context)),
        resource=Resource.create({"service.name": draw(st.text(max_size=50))}),
        attributes=draw(_attributes),
        events=events,
        links=links,
        status=Status(StatusCode.ERROR, description) if description else Status(),
        start_time=draw(st.integers(0, 2**64 - 1)),
        end_time=draw(st.integers(0, 2**64 - 1)),
        instrumentation_scope=InstrumentationScope(draw(st.text(max_size=50)), "1.0"),
    )


@settings(settings.get_profile("obskit-fuzz"), max_examples=40)
@given(st.lists(_spans(), min_size=1, max_size=6), st.integers(20, 2000))
def test_requests_are_never_larger_than_the_cap(spans: list[ReadableSpan], limit: int) -> None:
    """Random spans (unicode, long strings, lists, extreme numbers) fitted to a random
    limit and cap: each request's real encoding is within the cap, every string within
    the limit, and every span is in exactly one request."""
    cap = 8192
    requests, too_large = SizeLimits(limit, cap).split(spans)
    assert too_large == []
    sent = [span for request in requests for span in request]
    assert [s.context for s in sent] == [s.context for s in spans]
    for request in requests:
        assert len(encode_spans(request).SerializeToString()) <= cap
    for span in sent:
        assert len(span.name) <= limit
        strings = [span.status.description or ""]
        for attributes in [span.attributes, *(e.attributes for e in span.events)]:
            for value in (attributes or {}).values():
                strings += value if isinstance(value, tuple) else [value]
        strings += [e.name for e in span.events]
        assert all(len(s) <= limit for s in strings if isinstance(s, str))
