"""Scenario 1: the collector is down while ~200 req/s hit the app under gunicorn.

Every response is 200, each worker's RSS grows < 20 MB, the export-error and dropped
counters rise, spans flow again within 2 export intervals once the collector is back,
and obskit/OpenTelemetry warnings stay at <= 1 line per 10 s per message. What the
outage costs in latency (p99 against the same app with export off) is a timing, so it
is measured by ``benchmarks/bench_collector_down.py``, not judged here.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.collector import FaultyCollector
from tests.reliability.rig import flask_gunicorn, paced_load, process_figures, worker_pids
from tests.servers import Server

RATE = 200  # requests per second, all client threads together
SECONDS = 30
THREADS = 8
INTERVAL_MS = 1000  # the batch processor's export interval in this test


def _worker_rss(server: Server) -> dict[int, int]:
    """RSS in kB of each gunicorn worker (the master's children)."""
    return {pid: process_figures(pid)["rss_kb"] for pid in worker_pids(server)}


def _self_counters(server: Server) -> dict[str, float]:
    """obskit's export-error and dropped totals, as the pod's /metrics shows them."""
    text = server.scrape(accept="text/plain")
    totals: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith(("obskit_export_errors_total", "obskit_dropped_total")):
            totals[line.split("{")[0]] += float(line.rsplit(" ", 1)[1])
    return totals


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_collector_down_costs_the_app_no_answer_and_no_memory(tmp_path: Path) -> None:
    """With its collector down under load, the app answers every request 200, its
    workers' memory stays flat, the self-counters rise, warnings are rate-limited, and
    spans flow again within two export intervals once the collector is back."""
    collector = FaultyCollector()
    collector.stop()  # down from the start
    server = flask_gunicorn(
        tmp_path / "down",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": str(INTERVAL_MS),
        },
    )
    try:
        paced_load(server.url, RATE, 5, THREADS)  # warm-up
        rss_before = _worker_rss(server)
        statuses = paced_load(server.url, RATE, SECONDS, THREADS)
        rss_after = _worker_rss(server)
        counters = _self_counters(server)
        collector.start()  # the collector comes back
        back = time.monotonic()
        paced_load(server.url, RATE, 1, THREADS)
        arrived = collector.wait_for(1, timeout=10)
        recovery = time.monotonic() - back
    finally:
        server.stop()
        collector.close()
    lines = [json.loads(line) for line in server.stdout_path.read_text().splitlines()]
    noisy: dict[tuple[str, str], int] = collections.Counter(
        (line["logger"], line["event"][:60])
        for line in lines
        if line["level"] in ("warning", "error")
        and line["logger"].startswith(("obskit", "opentelemetry"))
    )
    figures: dict[str, Any] = {
        "requests": sum(statuses.values()),
        "non_200": sum(v for k, v in statuses.items() if k != 200),
        "rss_growth_kb": {pid: rss_after.get(pid, 0) - kb for pid, kb in rss_before.items()},
        "counters": dict(counters),
        "recovery_s": round(recovery, 2),
        "warning_lines_per_message": max(noisy.values(), default=0),
    }
    print("scenario 1 figures:", json.dumps(figures))
    assert figures["non_200"] == 0
    assert figures["requests"] >= RATE * SECONDS * 0.5
    assert rss_before
    assert all(growth < 20 * 1024 for growth in figures["rss_growth_kb"].values())
    assert counters["obskit_export_errors_total"] > 0
    assert counters["obskit_dropped_total"] > 0
    assert arrived
    # two export intervals plus the 1 s of load, with room for a busy machine
    assert recovery <= 2 * INTERVAL_MS / 1000 + 1 + 5
    # 2 workers x one line per 10 s while the server ran
    running = SECONDS + 20
    assert figures["warning_lines_per_message"] <= 2 * (running // 10 + 1)
