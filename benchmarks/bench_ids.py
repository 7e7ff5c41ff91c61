"""Cost of a new trace or span id: obskit's OS-random source against ``random.getrandbits``.

obskit draws ids from ``os.urandom`` (a 4 KiB block at a time, sliced per id) instead of
the process-global Mersenne Twister, whose state 104 ``traceresponse`` headers give away
(see ``docs/security.md``). This measures what that costs, per id and per span, next to
the hand-written floor of ``bench_traced.py`` (an OpenTelemetry span with the SDK's
default ``RandomIdGenerator`` plus a prometheus-client histogram) in the same run:

- ``getrandbits`` inline: what obskit's fast path did before (with its zero retry);
- ``new_trace_id()`` / ``new_span_id()``: what the fast path calls now;
- the SDK's ``RandomIdGenerator`` and obskit's ``OsRandomIdGenerator`` through the
  ``IdGenerator`` methods (what the SDK's own ``start_span`` calls);
- ``@obskit.traced``, sampled, with obskit's ids and with the SDK's ``RandomIdGenerator``
  swapped in (the same fast path otherwise).

Run: ``python benchmarks/bench_ids.py [rounds] [calls]``; prints a table and writes
``benchmarks/results/ids.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from random import getrandbits
from typing import Any

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import interleaved, timed
from bench_traced import make_floor, set_up, sync_case, work

from obskit._traces.ids import OsRandomIdGenerator, new_span_id, new_trace_id

RESULTS = Path(__file__).parent / "results"
FLOOR = "floor: otel span + prometheus histogram (SDK RandomIdGenerator)"


def old_trace_id() -> int:
    trace_id = getrandbits(128)
    while not trace_id:
        trace_id = getrandbits(128)
    return trace_id


def old_span_id() -> int:
    span_id = getrandbits(64)
    while not span_id:
        span_id = getrandbits(64)
    return span_id


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    _, histogram = set_up()
    handle = obskit.init(  # the same settings: set_up()'s handle, with its discarding processor
        service_name="bench", traces_exporter="none", log_format="json", log_level="warning"
    )
    provider = handle.tracer_provider
    assert provider is not None
    floor_provider_ids = provider.id_generator
    provider.id_generator = RandomIdGenerator()  # the floor: raw OpenTelemetry's default
    floor_tracer = provider.get_tracer("floor-sdk-ids")
    provider.id_generator = floor_provider_ids
    floor, _ = make_floor(floor_tracer, histogram)
    traced = obskit.traced(work)
    sdk_ids = RandomIdGenerator()
    os_ids = OsRandomIdGenerator()

    def traced_with(generator: Any) -> Callable[[int], float]:
        def run(calls: int) -> float:
            saved = (provider.id_generator, handle.tracer)
            provider.id_generator = generator
            handle.tracer = provider.get_tracer(f"ids-{type(generator).__name__}")
            try:
                return sync_case(traced)(calls)
            finally:
                provider.id_generator, handle.tracer = saved

        return run

    cases: dict[str, Callable[[int], float]] = {
        FLOOR: sync_case(floor),
        "@obskit.traced, obskit ids (OS random)": traced_with(os_ids),
        "@obskit.traced, SDK RandomIdGenerator": traced_with(sdk_ids),
        "trace id: getrandbits(128) inline (before)": timed(old_trace_id),
        "trace id: new_trace_id() (now)": timed(new_trace_id),
        "span id: getrandbits(64) inline (before)": timed(old_span_id),
        "span id: new_span_id() (now)": timed(new_span_id),
        "SDK RandomIdGenerator.generate_trace_id()": timed(sdk_ids.generate_trace_id),
        "OsRandomIdGenerator.generate_trace_id()": timed(os_ids.generate_trace_id),
        "SDK RandomIdGenerator.generate_span_id()": timed(sdk_ids.generate_span_id),
        "OsRandomIdGenerator.generate_span_id()": timed(os_ids.generate_span_id),
    }
    samples = interleaved(cases, rounds, calls)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor_cost = medians[FLOOR]
    rows = [
        {
            "case": name,
            "median_ns": round(value * 1e9, 1),
            "x_floor": round(value / floor_cost, 4),
        }
        for name, value in medians.items()
    ]
    before = medians["trace id: getrandbits(128) inline (before)"]
    before += medians["span id: getrandbits(64) inline (before)"]
    now = medians["trace id: new_trace_id() (now)"] + medians["span id: new_span_id() (now)"]
    root_delta = now - before
    child_delta = (
        medians["span id: new_span_id() (now)"]
        - medians["span id: getrandbits(64) inline (before)"]
    )
    print(f"per call, {rounds} interleaved rounds x {calls} calls (medians)")
    print(f"{'case':<60} {'median ns':>10} {'x floor':>8}")
    for row in rows:
        print(f"{row['case']:<60} {row['median_ns']:>10.1f} {row['x_floor']:>8.4f}")
    print(
        f"ids of a root span (trace + span id): {now * 1e9:.0f} ns now, {before * 1e9:.0f} ns"
        f" before: +{root_delta * 1e9:.0f} ns = {root_delta / floor_cost:.4f} x floor"
    )
    print(
        f"id of a child span: +{child_delta * 1e9:.0f} ns = {child_delta / floor_cost:.4f} x floor"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ids.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "root_span_ids_delta_x_floor": round(root_delta / floor_cost, 4),
                "child_span_id_delta_x_floor": round(child_delta / floor_cost, 4),
            },
            indent=2,
        )
    )
    obskit.shutdown()


if __name__ == "__main__":
    main()
