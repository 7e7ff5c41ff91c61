"""A real Prometheus server scrapes @traced metrics and stores their trace exemplars."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prometheus_server import Prometheus, free_port, prometheus_binary
from tests.receivers import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker(http_receiver: OtlpHttpReceiver) -> Iterator[int]:
    """A subprocess running @traced functions for up to 60 s; yields its metrics port
    (obskit's dedicated /metrics server, configured as a deployment does: by variables)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env["OBSKIT_METRICS_PORT"] = str(port)
    env["OBSKIT_METRICS_ADDR"] = "127.0.0.1"
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export spans quickly for the test
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/apps/traced_worker.py"),
            http_receiver.endpoint,
            "60",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.slow
def test_prometheus_scrapes_quantiles_and_exemplars_that_match_exported_spans(
    tmp_path: Path, worker: int, http_receiver: OtlpHttpReceiver
) -> None:
    """histogram_quantile over obskit_function_duration_seconds_bucket has a value, and
    /api/v1/query_exemplars returns trace ids of spans the OTLP receiver got."""
    prometheus_binary()
    server = Prometheus(tmp_path, [f"127.0.0.1:{worker}"])
    try:
        quantile = server.wait_for(
            "query",
            query=(
                "histogram_quantile(0.9, sum by (le) "
                "(rate(obskit_function_duration_seconds_bucket[10s])))"
            ),
        )
        (sample,) = quantile["result"]
        assert 0 < float(sample["value"][1]) <= 0.05
        now = time.time()
        exemplar_series = server.wait_for(
            "query_exemplars",
            query='obskit_function_duration_seconds_bucket{function="__main__.checkout"}',
            start=now - 120,
            end=now + 60,
        )
        trace_ids = {
            exemplar["labels"]["trace_id"]
            for series in exemplar_series
            for exemplar in series["exemplars"]
        }
        assert trace_ids
        for series in exemplar_series:
            assert series["seriesLabels"]["outcome"] == "ok"
        exported = {span.trace_id for span in http_receiver.wait_for(200, timeout=20)}
        deadline = time.monotonic() + 20
        while not trace_ids <= exported and time.monotonic() < deadline:
            time.sleep(0.5)
            exported = {span.trace_id for span in http_receiver.spans}
        assert trace_ids <= exported
    finally:
        server.close()
