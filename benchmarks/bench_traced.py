"""Cost per call of `@obskit.traced` against the hand-written floor, sync and async.

The floor is what people write by hand for a span *and* a histogram:
``tracer.start_as_current_span(name)`` around the call, then
``histogram.labels(fn, "ok").observe(dt, exemplar={trace_id, span_id})`` with a
prometheus-client Histogram. Both use the same SDK tracer provider and the same
buckets; the provider hands every ended span to a ``BatchSpanProcessor`` whose
exporter drops it (``_floor.discard_spans``), so both sides pay what a deployment pays
to end a span and neither pays for an export. (With no processor at all, obskit skips
building the ``ReadableSpan`` the SDK's ``end()`` always builds: a saving no
deployment with an exporter sees.)

Cases, interleaved round by round in one process:

- bare call;
- floor, sampled;
- ``@obskit.traced``, sampled;
- floor and ``@obskit.traced`` inside an *unsampled* trace (a remote parent with the
  sampled flag off, as when a caller sampled it out);
- ``@obskit.traced(span=False)``: histogram only, against the bare prometheus-client
  call it replaces: the call timed with ``perf_counter`` and ``child.observe(elapsed)``
  on a child bound once (``labels()`` outside the loop);
- ``@obskit.traced(span=False, histogram=False)``: the wrapper alone.

Peers (logfire, sentry-sdk, ddtrace) are measured when installed, else a note says
they were skipped.

Run: ``python benchmarks/bench_traced.py [rounds] [calls]``; prints a table and
writes ``benchmarks/results/traced.json`` and ``.md``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Histogram

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans
from _rounds import interleaved

RESULTS = Path(__file__).parent / "results"
SYNC_FLOOR = "sync: floor (otel span + prometheus histogram)"


def work(x: int) -> int:
    return x + 1


async def awork(x: int) -> int:
    return x + 1


def unsampled_context() -> context.Context:
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(0),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def make_floor(
    tracer: trace.Tracer, histogram: Histogram, attributes: dict[str, Any] | None = None
) -> tuple[Callable[..., Any], Any]:
    name = f"{__name__}.work"

    def floor(x: int) -> int:
        with tracer.start_as_current_span(name, attributes=attributes) as span:
            started = time.perf_counter()
            result = work(x)
            elapsed = time.perf_counter() - started
            ctx = span.get_span_context()
            exemplar = (
                {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
                if ctx.trace_flags.sampled
                else None
            )
            histogram.labels(name, "ok").observe(elapsed, exemplar)
            return result

    async def afloor(x: int) -> int:
        with tracer.start_as_current_span(name) as span:
            started = time.perf_counter()
            result = await awork(x)
            elapsed = time.perf_counter() - started
            ctx = span.get_span_context()
            exemplar = (
                {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
                if ctx.trace_flags.sampled
                else None
            )
            histogram.labels(name, "ok").observe(elapsed, exemplar)
            return result

    return floor, afloor


def sync_case(
    fn: Callable[[int], Any], ctx: context.Context | None = None
) -> Callable[[int], float]:
    def run(calls: int) -> float:
        token = context.attach(ctx) if ctx is not None else None
        try:
            started = time.perf_counter()
            for i in range(calls):
                fn(i)
            return (time.perf_counter() - started) / calls
        finally:
            if token is not None:
                context.detach(token)

    return run


def async_case(
    fn: Callable[[int], Awaitable[Any]], ctx: context.Context | None = None
) -> Callable[[int], float]:
    async def loop(calls: int) -> float:
        token = context.attach(ctx) if ctx is not None else None
        try:
            started = time.perf_counter()
            for i in range(calls):
                await fn(i)
            return (time.perf_counter() - started) / calls
        finally:
            if token is not None:
                context.detach(token)

    def run(calls: int) -> float:
        return asyncio.run(loop(calls))

    return run


def peers(cases: dict[str, Callable[[int], float]], notes: list[str]) -> None:
    try:
        import sentry_sdk

        sentry_sdk.init(traces_sample_rate=1.0)
        cases["sync: sentry @trace (peer)"] = sync_case(sentry_sdk.trace(work))
    except ImportError:
        notes.append("sentry-sdk not installed: peer skipped")
    try:
        import logfire

        logfire.configure(send_to_logfire=False, console=False)
        cases["sync: logfire @instrument (peer)"] = sync_case(logfire.instrument()(work))
    except ImportError:
        notes.append("logfire not installed: peer skipped")
    try:
        from ddtrace.trace import tracer as dd_tracer

        cases["sync: ddtrace tracer.wrap (peer)"] = sync_case(dd_tracer.wrap()(work))
    except ImportError:
        notes.append("ddtrace not installed: peer skipped")


def set_up() -> tuple[Any, Histogram]:
    """Initialise obskit as every case needs it; return the floor's tracer and histogram.

    obskit exports nothing itself; its provider, which the floor's tracer shares, gets
    the benchmarks' discarding batch processor, so both sides end spans alike.
    """
    handle = obskit.init(
        service_name="bench", traces_exporter="none", log_format="json", log_level="warning"
    )
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)
    tracer = handle.tracer_provider.get_tracer("floor")
    histogram = Histogram(
        "floor_duration_seconds",
        "Floor.",
        ["function", "outcome"],
        registry=CollectorRegistry(),
        buckets=handle.settings.histogram_buckets,
    )
    return tracer, histogram


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    tracer, histogram = set_up()
    floor, afloor = make_floor(tracer, histogram)
    # The same floor also setting the three semantic-convention code attributes that
    # @obskit.traced puts on every span (informational: it shows what they cost).
    code_attributes = {
        "code.function.name": f"{__name__}.work",
        "code.file.path": __file__,
        "code.line.number": work.__code__.co_firstlineno,
    }
    floor_attrs, _ = make_floor(tracer, histogram, code_attributes)
    bound_child = histogram.labels(f"{__name__}.work", "ok")

    def bare_observe(x: int) -> int:
        started = time.perf_counter()
        result = work(x)
        bound_child.observe(time.perf_counter() - started)
        return result

    traced, atraced = obskit.traced(work), obskit.traced(awork)
    hist_only = obskit.traced(span=False)(work)
    bare_wrapper = obskit.traced(span=False, histogram=False)(work)
    unsampled = unsampled_context()
    cases: dict[str, Callable[[int], float]] = {
        "sync: bare call": sync_case(work),
        SYNC_FLOOR: sync_case(floor),
        "sync: @obskit.traced": sync_case(traced),
        "sync: floor + code.* attributes (info)": sync_case(floor_attrs),
        "sync: floor, unsampled trace": sync_case(floor, unsampled),
        "sync: @obskit.traced, unsampled trace": sync_case(traced, unsampled),
        "sync: bare prometheus observe() (bound child)": sync_case(bare_observe),
        "sync: @obskit.traced(span=False)": sync_case(hist_only),
        "sync: wrapper only (span, histogram off)": sync_case(bare_wrapper),
        "async: bare call": async_case(awork),
        "async: floor": async_case(afloor),
        "async: @obskit.traced": async_case(atraced),
        "async: @obskit.traced, unsampled trace": async_case(atraced, unsampled),
    }
    notes: list[str] = []
    peers(cases, notes)
    samples = interleaved(cases, rounds, calls)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floors = {"sync": medians[SYNC_FLOOR]}
    floors["async"] = medians["async: floor"]
    rows = []
    for name, values in samples.items():
        kind = name.split(":")[0]
        rows.append(
            {
                "case": name,
                "median_us": round(medians[name] * 1e6, 3),
                "min_us": round(min(values) * 1e6, 3),
                "max_us": round(max(values) * 1e6, 3),
                "x_floor": round(medians[name] / floors[kind], 3),
            }
        )
    wrapper_cost = medians["sync: wrapper only (span, histogram off)"] - medians["sync: bare call"]
    # Target ratios: (case, reference) pairs. "ratios" divides the medians; "paired"
    # is the median over rounds of case/reference measured in the same round, which a
    # load spike on a shared machine skews less (it hits both or neither).
    targets = {
        "traced_sync_x_floor": ("sync: @obskit.traced", SYNC_FLOOR),
        "traced_async_x_floor": ("async: @obskit.traced", "async: floor"),
        "unsampled_sync_x_sampled_floor": ("sync: @obskit.traced, unsampled trace", SYNC_FLOOR),
        "unsampled_async_x_sampled_floor": (
            "async: @obskit.traced, unsampled trace",
            "async: floor",
        ),
        "histogram_only_x_bare_observe": (
            "sync: @obskit.traced(span=False)",
            "sync: bare prometheus observe() (bound child)",
        ),
    }
    ratios = {key: medians[case] / medians[ref] for key, (case, ref) in targets.items()}
    paired = {
        key: statistics.median(a / b for a, b in zip(samples[case], samples[ref], strict=True))
        for key, (case, ref) in targets.items()
    }
    print(
        f"per call, {rounds} interleaved rounds x {calls} calls (medians); spans of obskit"
        " and the floor alike to a BatchSpanProcessor with a discarding exporter"
    )
    print(f"{'case':<48} {'median us':>10} {'min-max us':>16} {'x floor':>8}")
    for row in rows:
        spread = f"{row['min_us']:.2f}-{row['max_us']:.2f}"
        print(f"{row['case']:<48} {row['median_us']:>10.2f} {spread:>16} {row['x_floor']:>8.2f}")
    print(f"wrapper's own cost (wrapper only - bare): {wrapper_cost * 1e6:.3f} us")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f} (paired per round: {paired[key]:.3f})")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "traced.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "wrapper_cost_us": wrapper_cost * 1e6,
                "ratios": {key: round(value, 3) for key, value in ratios.items()},
                "ratios_paired": {key: round(value, 3) for key, value in paired.items()},
                "notes": notes,
                "spans": "obskit and the floor: BatchSpanProcessor, discarding exporter",
            },
            indent=2,
        )
    )
    table = ["| case | median us | min-max us | x floor |", "|---|---|---|---|"]
    table += [
        f"| {r['case']} | {r['median_us']:.2f} | {r['min_us']:.2f}-{r['max_us']:.2f} | "
        f"{r['x_floor']:.2f} |"
        for r in rows
    ]
    (RESULTS / "traced.md").write_text("\n".join(table) + "\n")
    obskit.shutdown()


if __name__ == "__main__":
    main()
