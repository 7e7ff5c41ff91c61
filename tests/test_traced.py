"""@obskit.traced and obskit.span(): one span and one histogram observation per call."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import obskit
from tests.conftest import openmetrics

HISTOGRAM = "obskit_function_duration_seconds"


# --- the functions under test, one per kind -------------------------------------


@obskit.traced
def sync_fn(x: int) -> int:
    return x * 2


@obskit.traced
async def async_fn(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@obskit.traced
def gen_fn(x: int) -> Iterator[int]:
    yield x
    yield x * 2


@obskit.traced
async def agen_fn(x: int) -> AsyncIterator[int]:
    yield x
    await asyncio.sleep(0)
    yield x * 2


class Shop:
    @obskit.traced
    def method(self, x: int) -> int:
        return x * 2

    @obskit.traced
    @classmethod
    def klass(cls, x: int) -> int:
        return x * 2

    @obskit.traced
    @staticmethod
    def static(x: int) -> int:
        return x * 2


def _call(kind: str, x: int = 21) -> Any:
    if kind == "sync":
        return sync_fn(x)
    if kind == "async":
        return asyncio.run(async_fn(x))
    if kind == "generator":
        return list(gen_fn(x))
    if kind == "async generator":

        async def collect() -> list[int]:
            return [item async for item in agen_fn(x)]

        return asyncio.run(collect())
    if kind == "method":
        return Shop().method(x)
    if kind == "classmethod":
        return Shop.klass(x)
    return Shop.static(x)


KINDS = {
    "sync": ("sync_fn", 42),
    "async": ("async_fn", 42),
    "generator": ("gen_fn", [21, 42]),
    "async generator": ("agen_fn", [21, 42]),
    "method": ("Shop.method", 42),
    "classmethod": ("Shop.klass", 42),
    "staticmethod": ("Shop.static", 42),
}


def _samples(function: str, outcome: str) -> list[Any]:
    family = openmetrics().get(HISTOGRAM)
    if family is None:
        return []
    return [
        s
        for s in family.samples
        if s.labels.get("function") == function and s.labels.get("outcome") == outcome
    ]


def _count(function: str, outcome: str) -> float:
    counts = [s.value for s in _samples(function, outcome) if s.name == f"{HISTOGRAM}_count"]
    return counts[0] if counts else 0


def _exemplars(function: str, outcome: str = "ok") -> list[Any]:
    return [s.exemplar for s in _samples(function, outcome) if s.exemplar is not None]


@pytest.mark.parametrize("kind", list(KINDS))
def test_sampled_call_makes_one_child_span_and_one_observation_with_exemplar(
    kind: str, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """Each kind: a child span of the caller's span, named module.qualname; one
    observation with outcome ok whose exemplar trace_id is the span's."""
    exporter = spans()
    qualname, expected = KINDS[kind]
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        assert _call(kind) == expected
    finished = {s.name: s for s in exporter.get_finished_spans()}
    function = f"{__name__}.{qualname}"
    span = finished[function]
    assert set(finished) == {"caller", function}
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["code.function.name"] == function
    assert span.attributes["code.file.path"] == __file__
    assert _count(function, "ok") == 1
    (exemplar,) = _exemplars(function)
    assert exemplar.labels == {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_unsampled_call_still_observes_but_exports_no_span_and_no_exemplar(
    kind: str, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """With ratio 0: no span exported, the histogram still counts, without exemplar."""
    exporter = spans(traces_sampler="traceidratio", traces_sampler_arg=0)
    assert _call(kind) == KINDS[kind][1]
    function = f"{__name__}.{KINDS[kind][0]}"
    assert exporter.get_finished_spans() == ()
    assert _count(function, "ok") == 1
    assert _exemplars(function) == []


@obskit.traced
def fails() -> None:
    raise ValueError("no stock")


@obskit.traced
async def fails_async() -> None:
    await asyncio.sleep(0)
    raise ValueError("no stock")


@obskit.traced
def fails_gen() -> Iterator[int]:
    yield 1
    raise ValueError("no stock")


@obskit.traced
async def fails_agen() -> AsyncIterator[int]:
    yield 1
    raise ValueError("no stock")


def _run_failing(kind: str) -> None:
    if kind == "sync":
        fails()
    elif kind == "async":
        asyncio.run(fails_async())
    elif kind == "generator":
        list(fails_gen())
    else:

        async def collect() -> None:
            async for _ in fails_agen():
                pass

        asyncio.run(collect())


FAILING = {
    "sync": "fails",
    "async": "fails_async",
    "generator": "fails_gen",
    "async generator": "fails_agen",
}


@pytest.mark.parametrize("kind", list(FAILING))
def test_exception_is_recorded_and_the_same_object_reraised(
    kind: str, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """The caller gets the same exception with its raise site; the span is ERROR with
    an exception event; the histogram counts outcome=error."""
    exporter = spans()
    with pytest.raises(ValueError, match="no stock") as caught:
        _run_failing(kind)
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert frames[-1].name == FAILING[kind]
    assert frames[-1].line == 'raise ValueError("no stock")'
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: no stock"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    function = f"{__name__}.{FAILING[kind]}"
    assert _count(function, "error") == 1
    assert _count(function, "ok") == 0


def test_exception_object_identity_is_preserved(spans: Callable[..., InMemorySpanExporter]) -> None:
    """The exception caught by the caller is the very object raised inside."""
    spans()
    raised: list[BaseException] = []

    @obskit.traced
    def inner() -> None:
        error = RuntimeError("x")
        raised.append(error)
        raise error

    with pytest.raises(RuntimeError) as caught:
        inner()
    assert caught.value is raised[0]


def test_keyboard_interrupt_is_recorded_and_reraised(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """KeyboardInterrupt (a BaseException) is recorded as such and propagates."""
    exporter = spans()

    @obskit.traced
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    (span,) = exporter.get_finished_spans()
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "KeyboardInterrupt"
    assert span.status.status_code is StatusCode.ERROR


def test_cancelled_task_is_recorded_and_cancellation_propagates(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """Cancelling a task awaiting inside a traced coroutine marks its span cancelled (not an
    error: see tests/test_cancellation.py) and the cancellation propagates."""
    exporter = spans()

    @obskit.traced
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> bool:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main()) is True
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events
    assert span.attributes is not None
    assert span.attributes["obskit.cancelled"] is True


@pytest.mark.parametrize("asynchronous", [False, True])
def test_early_closed_generator_ends_its_span_without_detach_errors(
    asynchronous: bool, spans: Callable[..., InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """Breaking out of a traced generator ends its span (ok, not error) cleanly."""
    exporter = spans(log_stdlib=False)
    caplog.set_level(logging.DEBUG)
    finished_body: list[bool] = []

    @obskit.traced
    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            finished_body.append(True)

    @obskit.traced
    async def anumbers() -> AsyncIterator[int]:
        try:
            for n in range(100):
                yield n
        finally:
            finished_body.append(True)

    if asynchronous:

        async def take() -> None:
            stream = anumbers()
            async for n in stream:
                if n == 2:
                    break
            await stream.aclose()

        asyncio.run(take())
    else:
        for n in numbers():
            if n == 2:
                break
    assert finished_body == [True]
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]
    name = ".anumbers" if asynchronous else ".numbers"
    counts = {
        s.labels["outcome"]: s.value
        for s in openmetrics()[HISTOGRAM].samples
        if s.labels["function"].endswith(name) and s.name.endswith("_count")
    }
    assert counts == {"ok": 1, "error": 0}


def test_generator_span_is_current_only_inside_the_generator_body(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """The consumer's loop body sees its own span, never the generator's."""
    spans()
    seen_inside: list[int] = []

    @obskit.traced
    def produce() -> Iterator[int]:
        for n in range(3):
            seen_inside.append(trace.get_current_span().get_span_context().span_id)
            yield n

    with trace.get_tracer("t").start_as_current_span("consumer") as consumer:
        mine = consumer.get_span_context().span_id
        for _ in produce():
            assert trace.get_current_span().get_span_context().span_id == mine
    assert len(set(seen_inside)) == 1
    assert seen_inside[0] != mine


def test_generator_send_and_throw_reach_the_body(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """send() values and throw()n exceptions pass through the traced generator."""
    spans()

    @obskit.traced
    def echo() -> Any:
        received = []
        while True:
            try:
                value = yield len(received)
            except KeyError:
                yield "caught"
                return
            received.append(value)

    stream = echo()
    assert next(stream) == 0
    assert stream.send("a") == 1
    assert stream.throw(KeyError("k")) == "caught"


def test_introspection_is_kept() -> None:
    """__wrapped__, signature, and the coroutine/generator nature survive decoration."""
    assert inspect.signature(sync_fn) == inspect.signature(sync_fn.__wrapped__)  # type: ignore[attr-defined]
    assert list(inspect.signature(sync_fn).parameters) == ["x"]
    assert inspect.iscoroutinefunction(async_fn)
    assert inspect.isgeneratorfunction(gen_fn)
    assert inspect.isasyncgenfunction(agen_fn)
    assert sync_fn.__name__ == "sync_fn"
    assert sync_fn.__doc__ is None
    assert inspect.signature(Shop().method) == inspect.signature(Shop.static)


def test_decorated_before_init_works_untouched_then_traces_after(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """Before init() the function runs plainly; after init() the same function traces."""
    assert sync_fn(1) == 2  # no runtime yet
    assert HISTOGRAM not in openmetrics()
    exporter = spans()
    assert sync_fn(1) == 2
    assert len(exporter.get_finished_spans()) == 1


def test_options_name_attributes_span_and_histogram(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """name=/attributes= shape the span; span=False keeps only the histogram and
    histogram=False only the span."""
    exporter = spans()

    @obskit.traced(name="billing.charge", attributes={"tier": "gold"})
    def charge() -> None:
        pass

    @obskit.traced(span=False)
    def timed_only() -> None:
        pass

    @obskit.traced(histogram=False)
    def span_only() -> None:
        pass

    charge()
    timed_only()
    span_only()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert set(finished) == {"billing.charge", f"{__name__}.{span_only.__qualname__}"}
    attributes = finished["billing.charge"].attributes
    assert attributes is not None
    assert attributes["tier"] == "gold"
    assert _count(f"{__name__}.{charge.__qualname__}", "ok") == 1
    assert _count(f"{__name__}.{timed_only.__qualname__}", "ok") == 1
    assert _count(f"{__name__}.{span_only.__qualname__}", "ok") == 0


def test_record_exception_false_sets_error_status_without_event(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """record_exception=False: status ERROR, no exception event."""
    exporter = spans()

    @obskit.traced(record_exception=False)
    def quiet() -> None:
        raise LookupError("x")

    with pytest.raises(LookupError):
        quiet()
    (span,) = exporter.get_finished_spans()
    assert span.events == ()
    assert span.status.status_code is StatusCode.ERROR


def test_disabled_runs_functions_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OTEL_SDK_DISABLED the decorator is a pass-through."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    obskit.init()
    assert sync_fn(2) == 4
    assert HISTOGRAM not in openmetrics()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_span_context_manager_yields_the_current_span(
    asynchronous: bool, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """with/async with obskit.span(): the yielded span is current and gets the attributes;
    an escaping exception is recorded and propagates."""
    exporter = spans()

    async def run_async() -> None:
        async with obskit.span("load-cart", cart_id=7) as current:
            assert trace.get_current_span() is current
        with pytest.raises(ZeroDivisionError):
            async with obskit.span("broken"):
                1 / 0  # noqa: B018

    if asynchronous:
        asyncio.run(run_async())
    else:
        with obskit.span("load-cart", cart_id=7) as current:
            assert trace.get_current_span() is current
        with pytest.raises(ZeroDivisionError), obskit.span("broken"):
            1 / 0  # noqa: B018
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["load-cart"].attributes == {"cart_id": 7}
    assert finished["broken"].status.status_code is StatusCode.ERROR
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_span_as_decorator_and_before_init(spans: Callable[..., InMemorySpanExporter]) -> None:
    """@obskit.span(name) traces each call (no histogram); before init it is a no-op span."""
    with obskit.span("early") as early:
        assert not early.is_recording()
    exporter = spans()

    @obskit.span("decorated", k="v")
    def work() -> int:
        return 5

    assert work() == 5
    assert work() == 5
    assert [s.name for s in exporter.get_finished_spans()] == ["decorated", "decorated"]
    assert _count(f"{__name__}.{work.__qualname__}", "ok") == 0


def test_traced_inside_span_is_its_child(spans: Callable[..., InMemorySpanExporter]) -> None:
    """A traced call inside obskit.span() is a child of that span."""
    exporter = spans()
    with obskit.span("parent") as parent:
        sync_fn(1)
    child = next(s for s in exporter.get_finished_spans() if s.name.endswith("sync_fn"))
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id


def test_child_of_an_unsampled_parent_is_dropped_but_keeps_fresh_ids(
    spans: Callable[..., InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a parent-based sampler, a call inside an unsampled (remote) trace exports no
    span and no exemplar, but its log lines get the trace id and a fresh span id."""
    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    exporter = spans()
    seen: list[tuple[int, int, bool]] = []

    @obskit.traced
    def work() -> None:
        current = trace.get_current_span().get_span_context()
        seen.append((current.trace_id, current.span_id, current.trace_flags.sampled))
        obskit.get_logger("t").info("inside")

    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        capsys.readouterr()
        work()
        work()
    finally:
        otel_context.detach(token)
    assert exporter.get_finished_spans() == ()
    assert [(t, sampled) for t, _, sampled in seen] == [(0xABC, False), (0xABC, False)]
    span_ids = {s for _, s, _ in seen}
    assert len(span_ids) == 2
    assert 0xDEF not in span_ids
    (line, _) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["trace_id"] == format(0xABC, "032x")
    assert _count(f"{__name__}.{work.__qualname__}", "ok") == 2
    assert _exemplars(f"{__name__}.{work.__qualname__}") == []
