"""The per-kind call paths of @obskit.traced behave like the generic wrapt path.

Plain sync functions are traced inline in the proxy's ``__call__`` (with a separate
histogram-only branch), plain coroutine functions return the traced coroutine from
``__call__``, and ``span=False, histogram=False`` proxies call straight through.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._traces import decorator as _decorator
from tests.conftest import openmetrics

HISTOGRAM = "obskit_function_duration_seconds"


def _count(function: str, outcome: str) -> float:
    family = openmetrics().get(HISTOGRAM)
    if family is None:
        return 0
    for sample in family.samples:
        labels = sample.labels
        if (
            sample.name == f"{HISTOGRAM}_count"
            and labels.get("function") == function
            and labels.get("outcome") == outcome
        ):
            return float(sample.value)
    return 0


class Boom(Exception):
    pass


def test_histogram_only_error_is_counted_and_reraised_unchanged(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """span=False: a raising call counts outcome=error, no span, re-raises the same object."""
    exporter = spans()
    raised = Boom("no")

    @obskit.traced(span=False)
    def fails() -> None:
        raise raised

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is raised
    name = f"{__name__}.{fails.__qualname__}"
    assert _count(name, "error") == 1
    assert _count(name, "ok") == 0
    assert exporter.get_finished_spans() == ()


def test_histogram_only_observe_fault_is_reported_not_raised(
    spans: Callable[..., InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """span=False: if observing fails, the call still returns its value and the error is counted."""
    spans()

    @obskit.traced(span=False)
    def ok() -> int:
        return 7

    def boom(*args: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(_decorator, "_observe_plain", boom)
    before = sum(_internal_errors.internal_errors().values())
    assert ok() == 7
    assert sum(_internal_errors.internal_errors().values()) == before + 1


def test_pass_through_records_nothing_and_binds_as_a_method(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """span=False, histogram=False: functions and methods run unchanged, nothing is recorded."""
    exporter = spans()

    @obskit.traced(span=False, histogram=False)
    def double(x: int) -> int:
        return x * 2

    class Shop:
        @obskit.traced(span=False, histogram=False)
        def triple(self, x: int) -> int:
            return x * 3

    assert double(2) == 4
    assert Shop().triple(2) == 6
    assert double.__wrapped__(3) == 6  # type: ignore[attr-defined]
    assert exporter.get_finished_spans() == ()
    assert _count(f"{__name__}.{double.__qualname__}", "ok") == 0


def test_plain_coroutine_function_keeps_its_kind_and_is_traced(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """A decorated async def stays a coroutine function; each await makes one span."""
    exporter = spans()

    @obskit.traced
    async def fetch(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise Boom("down")
        return "ok"

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(False)) == "ok"
    with pytest.raises(Boom):
        asyncio.run(fetch(True))
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == [f"{__name__}.{fetch.__qualname__}"] * 2
    assert _count(f"{__name__}.{fetch.__qualname__}", "error") == 1
