"""asyncio cancellation is not an error, and a traced generator's ``finally`` keeps its span.

A cancelled ``@traced`` coroutine, async generator or ``obskit.span()`` block is recorded as
``outcome="cancelled"`` (span status UNSET, ``obskit.cancelled=true``, no exception event),
and the very CancelledError object propagates. Log lines written in a traced generator's
``finally`` — exhausted, closed early or garbage-collected — carry the generator span's ids.
Every test runs with the fast paths on and off.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import obskit
import obskit.testing

HISTOGRAM = "obskit_function_duration_seconds_count"
log = obskit.get_logger(__name__)


@pytest.fixture(params=["1", "0"], ids=["fast_paths_on", "fast_paths_off"], autouse=True)
def fast_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    value: str = request.param
    monkeypatch.setenv("OBSKIT_FAST_PATHS", value)
    return value


@pytest.fixture
def captured() -> Iterator[obskit.testing.Capture]:
    with obskit.testing.capture() as capture:
        yield capture


def _assert_cancelled(span: ReadableSpan) -> None:
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events  # no exception event
    assert span.attributes is not None
    assert span.attributes["obskit.cancelled"] is True
    assert "error.type" not in span.attributes


def _outcomes(capture: obskit.testing.Capture, function: str) -> dict[str, float]:
    return {
        outcome: capture.metrics.increase(HISTOGRAM, function=function, outcome=outcome)
        for outcome in ("ok", "error", "cancelled")
    }


async def _cancel_inside(body: Any) -> tuple[BaseException, BaseException, bool]:
    """Run ``body(seen_inside)`` in a task, cancel it once it waits; return the CancelledError
    seen inside the traced code, the one seen just outside it (in the same task) and
    whether the task ended cancelled."""
    inside: list[BaseException] = []
    outside: list[BaseException] = []
    waiting = asyncio.Event()

    async def run() -> None:
        try:
            await body(inside, waiting)
        except asyncio.CancelledError as error:
            outside.append(error)
            raise

    task = asyncio.create_task(run())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return inside[0], outside[0], task.cancelled()


async def _wait_forever(inside: list[BaseException], waiting: asyncio.Event) -> None:
    waiting.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError as error:
        inside.append(error)
        raise


@obskit.traced
async def waits_forever(inside: list[BaseException], waiting: asyncio.Event) -> None:
    await _wait_forever(inside, waiting)


class Worker:
    @obskit.traced
    async def waits_forever(self, inside: list[BaseException], waiting: asyncio.Event) -> None:
        await _wait_forever(inside, waiting)


@pytest.mark.parametrize("kind", ["function", "method"])
def test_cancelled_traced_coroutine_is_outcome_cancelled_not_error(
    kind: str, captured: obskit.testing.Capture
) -> None:
    """A @traced coroutine (function or method) whose task is cancelled records
    outcome="cancelled", span status UNSET, no exception event, and re-raises the same
    CancelledError object."""
    target = waits_forever if kind == "function" else Worker().waits_forever
    inside, outside, cancelled = asyncio.run(_cancel_inside(target))
    assert outside is inside
    assert cancelled
    name = "waits_forever" if kind == "function" else "Worker.waits_forever"
    (span,) = captured.spans
    assert span.name == f"{__name__}.{name}"
    _assert_cancelled(span)
    assert _outcomes(captured, f"{__name__}.{name}") == {"ok": 0, "error": 0, "cancelled": 1}


def test_a_cancelled_error_raised_by_the_code_itself_passes_through_unchanged(
    captured: obskit.testing.Capture,
) -> None:
    """A CancelledError the traced coroutine raises itself reaches its awaiting caller as the
    same object, with outcome="cancelled"."""
    raised = asyncio.CancelledError("stop")

    @obskit.traced
    async def gives_up() -> None:
        raise raised

    async def main() -> BaseException:
        try:
            await gives_up()
        except asyncio.CancelledError as error:
            return error
        raise AssertionError("not raised")

    assert asyncio.run(main()) is raised
    _assert_cancelled(captured.spans[0])
    assert captured.metrics.increase(HISTOGRAM, outcome="cancelled") == 1


@pytest.mark.parametrize("block", ["with", "async with"])
def test_cancelled_span_block_is_not_an_error(block: str, captured: obskit.testing.Capture) -> None:
    """An obskit.span() block left by a task's cancellation keeps status UNSET, gets
    obskit.cancelled=true and no exception event; the same CancelledError propagates."""

    async def body(inside: list[BaseException], waiting: asyncio.Event) -> None:
        if block == "with":
            with obskit.span("cancelled.block"):
                await _wait_forever(inside, waiting)
        else:
            async with obskit.span("cancelled.block"):
                await _wait_forever(inside, waiting)

    inside, outside, cancelled = asyncio.run(_cancel_inside(body))
    assert outside is inside
    assert cancelled
    _assert_cancelled(captured.span("cancelled.block"))


def test_cancelled_async_generator_is_outcome_cancelled(captured: obskit.testing.Capture) -> None:
    """A task cancelled while a @traced async generator's body awaits records
    outcome="cancelled" (not error) and the CancelledError reaches the consumer unchanged."""

    @obskit.traced
    async def stream(inside: list[BaseException], waiting: asyncio.Event) -> AsyncIterator[int]:
        yield 1
        await _wait_forever(inside, waiting)
        yield 2

    async def body(inside: list[BaseException], waiting: asyncio.Event) -> None:
        async for _ in stream(inside, waiting):
            pass

    inside, outside, cancelled = asyncio.run(_cancel_inside(body))
    assert outside is inside
    assert cancelled
    (span,) = captured.spans
    _assert_cancelled(span)
    assert _outcomes(captured, span.name) == {"ok": 0, "error": 0, "cancelled": 1}


def test_other_exceptions_stay_errors(captured: obskit.testing.Capture) -> None:
    """Only cancellation changed: another exception from a @traced coroutine is still
    outcome="error" with status ERROR and an exception event."""

    @obskit.traced
    async def fails() -> None:
        raise TimeoutError("late")

    with pytest.raises(TimeoutError):
        asyncio.run(fails())
    (span,) = captured.spans
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert "obskit.cancelled" not in (span.attributes or {})
    assert _outcomes(captured, span.name) == {"ok": 0, "error": 1, "cancelled": 0}


# --- a traced generator's finally ------------------------------------------------------


@obskit.traced
def numbers() -> Generator[int, None, None]:
    try:
        yield 1
        yield 2
    finally:
        log.info("numbers cleanup")


@obskit.traced
async def anumbers() -> AsyncGenerator[int, None]:
    try:
        yield 1
        await asyncio.sleep(0)
        yield 2
    finally:
        log.info("numbers cleanup")


def _consume(how: str) -> None:
    if how == "exhausted":
        assert list(numbers()) == [1, 2]
    elif how == "closed early":
        for _ in numbers():
            break  # the loop drops the generator: CPython closes it at once
        stream = numbers()
        next(stream)
        stream.close()
    else:  # garbage-collected while suspended
        stream = numbers()
        next(stream)
        del stream
        gc.collect()


async def _aconsume(how: str) -> None:
    if how == "exhausted":
        assert [n async for n in anumbers()] == [1, 2]
    elif how == "closed early":
        stream = anumbers()
        async for _ in stream:
            break
        await stream.aclose()
    else:  # garbage-collected while suspended: asyncio's finalizer hook closes it
        stream = anumbers()
        await stream.__anext__()
        del stream
        gc.collect()
        for _ in range(10):  # the hook schedules aclose() as a task: let it run
            await asyncio.sleep(0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("how", ["exhausted", "closed early", "garbage-collected"])
def test_generator_finally_log_line_carries_the_generator_span(
    how: str, asynchronous: bool, captured: obskit.testing.Capture
) -> None:
    """A log line written in a @traced generator's finally block carries that generator's
    trace_id and span_id, whether it was exhausted, closed early or garbage-collected; the
    span ends with outcome ok and status UNSET."""
    if asynchronous:
        asyncio.run(_aconsume(how))
    else:
        _consume(how)
    lines = [line for line in captured.logs if line["event"] == "numbers cleanup"]
    spans = captured.spans
    assert len(lines) == len(spans) >= 1
    for line, span in zip(lines, spans, strict=True):
        assert span.context is not None
        assert line["trace_id"] == captured.trace_id(span)
        assert line["span_id"] == format(span.context.span_id, "016x")
        assert span.status.status_code is StatusCode.UNSET
    assert _outcomes(captured, spans[0].name) == {"ok": len(spans), "error": 0, "cancelled": 0}
