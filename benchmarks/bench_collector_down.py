"""The collector is down: what does it cost the app? p99 latency under gunicorn.

Two gunicorn servers (examples/flask_app.py, examples/gunicorn.conf.py, 2 sync workers)
run side by side on 127.0.0.1: the *reference* with tracing export off, and the app
exporting over OTLP/HTTP to a collector that is down (connection refused). The same
paced load (``RATE`` req/s from 8 threads) alternates between them in 5 s turns in
ABBA order, so this VM's slower and faster stretches hit both alike. Reports each
server's p99 over all its requests and their ratio (the reliability target: the app
with its collector down within 1.2x of the reference), plus the median of the
per-turn ratios. The functional side (every answer 200, counters rising, memory flat,
recovery once the collector is back) is tested in
``tests/reliability/test_collector_down.py``; the timing lives here, where a busy
machine makes a number worse instead of a test red.

Run: ``python benchmarks/bench_collector_down.py [minutes]`` (default 1).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.collector import FaultyCollector  # noqa: E402
from tests.reliability.rig import flask_gunicorn, paced_load  # noqa: E402

RATE = 200  # requests per second, all client threads together
THREADS = 8
CHUNK = 5  # seconds of load per turn
RESULTS = Path(__file__).parent / "results"


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def main() -> None:
    minutes = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    collector = FaultyCollector()
    collector.stop()  # down from the start
    with tempfile.TemporaryDirectory() as tmp:
        reference = flask_gunicorn(
            Path(tmp) / "reference", {"OBSKIT_TRACES_EXPORTER": "none"}, measure_coverage=False
        )
        server = flask_gunicorn(
            Path(tmp) / "down",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint},
            measure_coverage=False,
        )
        base: list[float] = []
        down: list[float] = []
        turn_ratios: list[float] = []
        try:
            for target in (reference, server):  # warm-up
                paced_load(target.url, RATE, CHUNK, THREADS, latencies=[])
            for turn in range(minutes * 60 // CHUNK):
                first_is_reference = turn % 2 == 0
                turn_latencies: dict[bool, list[float]] = {}
                for is_reference in (first_is_reference, not first_is_reference):
                    latencies: list[float] = []
                    target = reference if is_reference else server
                    paced_load(target.url, RATE, CHUNK, THREADS, latencies=latencies)
                    turn_latencies[is_reference] = latencies
                base += turn_latencies[True]
                down += turn_latencies[False]
                turn_ratios.append(_p99(turn_latencies[False]) / _p99(turn_latencies[True]))
        finally:
            reference.stop()
            server.stop()
            collector.close()
    figures = {
        "requests_each": len(down),
        "p99_ms_export_off": round(_p99(base) * 1e3, 2),
        "p99_ms_collector_down": round(_p99(down) * 1e3, 2),
        "p99_ratio": round(_p99(down) / _p99(base), 3),
        "p99_ratio_median_of_turns": round(statistics.median(turn_ratios), 3),
    }
    print(f"collector down, {minutes} min of ~{RATE} req/s per server, 2 sync workers each")
    for name, value in figures.items():
        print(f"{name}: {value}")
    print("target: p99_ratio <= 1.2")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "collector_down.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
