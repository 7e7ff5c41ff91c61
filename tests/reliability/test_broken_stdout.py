"""Scenario 14: gunicorn whose stdout is a pipe nobody reads (it fills up) or a closed
pipe keeps answering every request, and the log lines it cannot write are counted."""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.rig import flask_gunicorn
from tests.servers import Server

REQUESTS = 600  # ~3 log lines each: ~0.5 MB of log, eight times the 64 KiB pipe buffer
CLIENTS = 4
DEADLINE = 30.0  # seconds for all the requests; a hung server stops the run here


def _drive(server: Server) -> tuple[collections.Counter[int], list[float]]:
    """REQUESTS requests from CLIENTS threads (stopping at DEADLINE); status counts
    and latencies."""
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE

    def client(index: int) -> None:
        for n in range(index, REQUESTS, CLIENTS):
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{server.url}/post/{n}", timeout=5) as reply:
                    reply.read()
                    status = reply.status
            except Exception:
                status = 0
            with lock:
                statuses[status] += 1
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, latencies


def _dropped_logs(server: Server) -> dict[str, float]:
    """obskit_dropped_total{signal="logs"} by reason, as the pod's /metrics shows it."""
    text = server.scrape(accept="text/plain")
    dropped: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith("obskit_dropped_total{") and 'signal="logs"' in line:
            reason = line.split('reason="')[1].split('"')[0]
            dropped[reason] += float(line.rsplit(" ", 1)[1])
    return dict(dropped)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """An OS pipe (read end, write end); whatever is still open is closed afterwards."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def _serve(tmp_path: Path, name: str, stdout: int | None) -> Server:
    return flask_gunicorn(
        tmp_path / name,
        # no buffer: the pipe is full at once, so lines are dropped and counted
        {"OBSKIT_TRACES_EXPORTER": "none", "OBSKIT_LOG_BUFFER_BYTES": "0"},
        measure_coverage=False,  # latency is measured
        stdout=stdout,
    )


@pytest.mark.slow
def test_a_full_stdout_pipe_drops_and_counts_log_lines_instead_of_blocking(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    """With stdout a pipe nobody reads, every request still gets 200 fast (no write
    blocks once the 64 KiB buffer is full) and the dropped lines show on /metrics."""
    _read_end, write_end = pipe
    reference = _serve(tmp_path, "file", None)  # stdout to a file: the reference
    server = _serve(tmp_path, "full", write_end)
    os.close(write_end)  # the server holds it; nobody ever reads read_end
    try:
        _, reference_latencies = _drive(reference)
        statuses, latencies = _drive(server)
        dropped = _dropped_logs(server)
    finally:
        reference.stop()
        server.stop()
    figures: dict[str, Any] = {
        "statuses": dict(statuses),
        "p50_ms": round(statistics.median(latencies) * 1e3, 2),
        "max_ms": round(max(latencies) * 1e3, 1),
        "reference_p50_ms": round(statistics.median(reference_latencies) * 1e3, 2),
        "reference_max_ms": round(max(reference_latencies) * 1e3, 1),
        "dropped": dropped,
    }
    print("scenario 14 full pipe:", figures)
    assert statuses == {200: REQUESTS}
    assert max(latencies) < 2.0  # a blocking write would hang until gunicorn's 30 s timeout
    # (the latency against the reference is printed above: a timing, not judged here)
    # the pod's /metrics sums every worker's counters (more than half would be one's)
    assert dropped.get("pipe_full", 0) > REQUESTS // 2


@pytest.mark.slow
def test_a_closed_stdout_pipe_drops_and_counts_log_lines(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    """With stdout a pipe whose reader has gone (EPIPE), every request still gets 200
    and the lost lines show on /metrics."""
    read_end, write_end = pipe
    server = _serve(tmp_path, "closed", write_end)
    os.close(write_end)
    os.close(read_end)  # the reader goes away
    try:
        statuses, latencies = _drive(server)
        dropped = _dropped_logs(server)
    finally:
        server.stop()
    print("scenario 14 closed pipe:", dict(statuses), round(max(latencies) * 1e3, 1), dropped)
    assert statuses == {200: REQUESTS}
    assert max(latencies) < 2.0
    assert dropped.get("write_error", 0) > REQUESTS // 2  # (every worker's counters)
