"""Scenario 10: cardinality attack. Distinct random paths against the Flask and Django
apps (100,000 with OBSKIT_ATTACK_PATHS=100000; fewer by default, see PATHS), 100,000
distinct label values on user metrics: at most
``metrics_max_series + 1`` series per metric, a ``/metrics`` body under 5 MB (the
scrape's time is printed with the figures, not judged).

The requests are raw WSGI calls in-process (the environ gunicorn would build, the app
called directly): 100,000 real HTTP round trips would take minutes, and the cardinality
path (route template → label set) is the same code either way. ``/metrics`` is scraped
the same way from ``obskit.metrics_wsgi_app()``, the app obskit's metrics port serves.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

import obskit
from obskit._metrics import registry as _registry
from obskit._metrics.registry import DEFAULT_BUCKETS
from tests.conftest import wsgi_request
from tests.reliability.conftest import Target, coverage_paused

DISTINCT = 100_000
MAX_BODY = 5_000_000
# Random paths per framework: the full count (about a minute per framework on
# this machine; OBSKIT_ATTACK_PATHS sets another count for a quick local run).
PATHS = {
    "flask": int(os.environ.get("OBSKIT_ATTACK_PATHS", "100000")),
    "django": int(os.environ.get("OBSKIT_ATTACK_PATHS", "100000")),
}


def _label_sets() -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """The label sets (``le`` aside) of each labelled family in obskit's registry, read
    through its public ``collect()``."""
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in _registry.store().registry.collect():
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if labels:
                found.setdefault(family.name, set()).add(labels)
    return found


def _series_per_metric() -> dict[str, int]:
    """Label sets of each labelled metric in obskit's registry."""
    return {name: len(sets) for name, sets in _label_sets().items()}


def _scrape(app: Any, accept: str) -> tuple[bytes, float]:
    """GET /metrics from a WSGI app serving metrics: (body, seconds)."""
    started = time.perf_counter()
    status, _, body = wsgi_request(app, "/metrics", [("Accept", accept)])
    elapsed = time.perf_counter() - started
    assert status == 200
    return body, elapsed


def _check_scrapes(app: Any, figures: dict[str, Any], reference: Any = None) -> None:
    """Both formats, median of three: body < 5 MB; the scrape's time (and, given a
    ``reference`` app serving plain prometheus-client metrics with the same series,
    scraped alternately, the reference's) goes into ``figures`` for the docs: a timing
    is reported, never judged in a test (benchmarks/ measures speed)."""
    for accept in ("text/plain", "application/openmetrics-text"):
        ours, theirs = [], []
        for _ in range(3):
            body, elapsed = _scrape(app, accept)
            ours.append(elapsed)
            if reference is not None:
                theirs.append(_scrape(reference, accept)[1])
        elapsed = statistics.median(ours)
        figures[accept] = {"bytes": len(body), "ms": round(elapsed * 1000, 1)}
        assert len(body) < MAX_BODY
        if reference is not None:
            figures[accept]["reference ms"] = round(statistics.median(theirs) * 1000, 1)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the full 100,000-path run (OBSKIT_ATTACK_PATHS) takes minutes
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_random_paths_keep_series_bounded(framework: str, target: Callable[..., Target]) -> None:
    """Distinct random paths, half unknown (404) and half one matched route with random
    ids: every request answered, each metric within the cap + 1, /metrics small and fast."""
    app = target(framework, metrics_max_series=2000)
    matched = "/items/{}" if framework == "flask" else "/catalog/item/{}"
    rng = random.Random(10)
    count = PATHS[framework]
    started = time.perf_counter()
    with coverage_paused():
        for n in range(count):
            token = f"{rng.getrandbits(64):x}{n}"
            path = matched.format(n) if n % 2 else f"/scan/{token}/{token[::-1]}.php"
            status, _, _ = wsgi_request(app.app, path)
            assert status in (200, 404)
            if n % 10_000 == 0:
                app.lines()  # drain the captured access lines
    elapsed = time.perf_counter() - started
    app.lines()
    series = _series_per_metric()
    assert max(series.values()) <= 2000 + 1
    routes = {
        dict(labels)["http_route"]
        for labels in _label_sets()["http_server_request_duration_seconds"]
    }
    assert "<unmatched>" in routes
    assert len(routes) <= 3
    figures: dict[str, Any] = {"requests": count, "seconds": round(elapsed, 1)}
    _check_scrapes(obskit.metrics_wsgi_app(), figures)  # what the metrics port serves
    print(f"\n{framework}: {figures} series={series}")


def _reference_app(series: int) -> Any:
    """Plain prometheus-client: a counter and a histogram (obskit's buckets, exemplars)
    with ``series`` label sets each, served by prometheus-client's own WSGI app."""
    registry = CollectorRegistry()
    hits = Counter("ref_hits_total", "Hits.", ["user"], registry=registry)
    latency = Histogram(
        "ref_latency_seconds", "Latency.", ["user"], registry=registry, buckets=DEFAULT_BUCKETS
    )
    exemplar = {"trace_id": "1" * 32, "span_id": "2" * 16}
    for n in range(series):
        user = f"user-{n:016x}-{n}"
        hits.labels(user).inc()
        latency.labels(user).observe(0.01, exemplar)
    return make_wsgi_app(registry)


@pytest.mark.slow
def test_distinct_label_values_on_user_metrics(capfd: pytest.CaptureFixture[str]) -> None:
    """100,000 distinct label values on a counter and a histogram (default cap 2000):
    2001 series each (the cap + __overflow__), /metrics < 5 MB and scraped < 500 ms."""
    obskit.init(service_name="cardinality")
    hits = obskit.counter("attack_hits_total", "Hits.", ["user"])
    latency = obskit.histogram("attack_latency_seconds", "Latency.", ["user"])
    rng = random.Random(11)
    started = time.perf_counter()
    with coverage_paused(), obskit.span("attack"):  # exemplars, as in a request
        for n in range(DISTINCT):
            user = f"user-{rng.getrandbits(64):016x}-{n}"
            hits.labels(user).inc()
            latency.labels(user).observe(0.01)
    elapsed = time.perf_counter() - started
    series = _series_per_metric()
    assert series["attack_hits"] == series["attack_latency_seconds"] == 2001
    figures: dict[str, Any] = {"series": series, "loop seconds": round(elapsed, 1)}
    _check_scrapes(obskit.metrics_wsgi_app(), figures, _reference_app(2001))
    capfd.readouterr()
    print(f"\nuser metrics: {figures}")
