"""Run one ``bench_traced`` case in a loop, for a profiler to sample.

Usage (the flame graphs in ``docs/perf/`` were made this way, imports excluded by
attaching after start-up)::

    python benchmarks/profile_traced.py traced 11 &      # prints "ready PID"
    py-spy record -r 250 --pid PID --duration 8 -o docs/perf/traced-after.svg

Cases: ``floor`` (OpenTelemetry span + prometheus-client histogram by hand),
``traced``, ``unsampled`` (``@obskit.traced`` inside an unsampled trace), ``hist``
(``span=False``), ``wrapper`` (span and histogram off).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context

import obskit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_traced


def main() -> None:
    case, seconds = sys.argv[1], float(sys.argv[2])
    tracer, histogram = bench_traced.set_up()
    floor, _ = bench_traced.make_floor(tracer, histogram)
    cases: dict[str, Callable[[int], Any]] = {
        "floor": floor,
        "traced": obskit.traced(bench_traced.work),
        "unsampled": obskit.traced(bench_traced.work),
        "hist": obskit.traced(span=False)(bench_traced.work),
        "wrapper": obskit.traced(span=False, histogram=False)(bench_traced.work),
    }
    fn = cases[case]
    if case == "unsampled":
        context.attach(bench_traced.unsampled_context())
    print("ready", os.getpid(), flush=True)
    calls = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(1000):
            fn(i)
        calls += 1000
    print(f"{case}: {calls} calls, {seconds / calls * 1e6:.2f} us/call (profiler attached)")
    obskit.shutdown()


if __name__ == "__main__":
    main()
