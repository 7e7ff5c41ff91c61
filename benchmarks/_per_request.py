"""Shared by bench_flask.py and bench_django.py: drive a WSGI app without a network,
run the cases interleaved, and report each case's cost added over the bare app."""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/hello/world",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.version": (1, 0),
}


def driver(app: Any) -> Callable[[int], float]:
    """Seconds per request of ``GET /hello/world`` through ``app`` (body read and closed)."""

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        assert status.startswith("200"), status

    def run(requests: int) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            environ = dict(_ENVIRON)
            environ["wsgi.input"] = io.BytesIO()
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - started) / requests

    return run


def measure_and_report(
    cases: dict[str, Callable[[int], float]],
    bare: str,
    rounds: int,
    requests: int,
    notes: list[str],
    result_name: str,
) -> None:
    """Warm up, run ``rounds`` interleaved rounds (stdout to /dev/null, where the access
    log goes), print the table and write ``results/<result_name>.json``."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    real_stdout, sys.stdout = sys.stdout, devnull
    try:
        for case in cases.values():
            case(requests // 10)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                samples[name].append(case(requests))
    finally:
        sys.stdout = real_stdout
    baseline = statistics.median(samples[bare])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "case": name,
                "median_us": round(median * 1e6, 2),
                "added_us": round((median - baseline) * 1e6, 2),
                "min_us": round(min(values) * 1e6, 2),
                "max_us": round(max(values) * 1e6, 2),
            }
        )
    print(f"per request, {rounds} interleaved rounds x {requests} requests (medians)")
    print(f"{'case':<46} {'median us':>10} {'added us':>9} {'min-max us':>16}")
    for row in rows:
        spread = f"{row['min_us']:.0f}-{row['max_us']:.0f}"
        print(f"{row['case']:<46} {row['median_us']:>10.1f} {row['added_us']:>9.1f} {spread:>16}")
    # obskit's added cost against the hand-wired peer pair's, when both ran.
    added = {row["case"]: row["added_us"] for row in rows}
    peer = next((name for name in added if name.startswith("hand-wired")), None)
    ours = next((name for name in added if name.startswith("obskit")), None)
    ratio = None
    if peer is not None and ours is not None and added[peer] > 0:
        ratio = round(added[ours] / added[peer], 3)
        print(f"{ours} added cost / {peer} added cost: {ratio:.2f}x (target #10: <= 0.5x)")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{result_name}.json").write_text(
        json.dumps({"rows": rows, "notes": notes, "added_ratio_vs_peers": ratio}, indent=2)
    )
