"""The exposition accelerator (obskit/_fast/exposition.py) renders the bytes of
prometheus-client's encoders; when its check fails, prometheus-client's encoders serve."""

from __future__ import annotations

import functools
import gzip
import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    make_wsgi_app,
)
from prometheus_client import exposition as text_exposition
from prometheus_client import metrics as client_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.openmetrics import exposition as om_exposition

import obskit
from obskit._fast import exposition as _fast_exposition
from obskit._fast import status
from obskit._metrics import exposition as _exposition
from obskit._metrics import registry as _metrics
from obskit._metrics.registry import ObskitCounter, ObskitGauge, ObskitHistogram
from tests.conftest import openmetrics, wsgi_request
from tests.servers import run_python
from tests.test_exposition import TAKES_ESCAPING, upstream

ROOT = Path(__file__).resolve().parents[2]
#: The escapings of the installed prometheus-client (only ``underscores`` before 0.23.1).
ESCAPINGS = ("underscores", "dots", "values", "allow-utf-8") if TAKES_ESCAPING else ("underscores",)
NASTY = ['say "hi"', "back\\slash", "new\nline", "ünïcödé ✓ 日本", "", "le", "\\n x", "}{,="]
FLOATS = [0.0, -0.0, 1.0, -2.5, 1e-9, 1e21, 123456789.0, 1234567.5, float("inf"), float("-inf")]


@pytest.fixture(autouse=True)
def _accelerators_on() -> None:
    """These tests compare the accelerator with prometheus-client's encoders: it must be on
    (whatever the environment asks for the rest of the suite)."""
    status.decide(True)
    assert status.enabled("exposition")


def encoder_function(encoder: Any) -> Any:
    """The function an encoder from ``choose_encoder`` calls: prometheus-client returns a
    ``functools.partial`` of ``generate_latest`` from 0.23.1, the function itself before."""
    return encoder.func if isinstance(encoder, functools.partial) else encoder


def assert_identical(registry: Any) -> None:
    """obskit's rendering equals prometheus-client's in both formats and every escaping."""
    for openmetrics_format in (False, True):
        for escaping in ESCAPINGS:
            ours = _fast_exposition.render(registry, openmetrics_format, escaping)
            reference = upstream(registry, openmetrics_format, escaping)
            assert ours == reference, (openmetrics_format, escaping)


class Families:
    """A custom collector yielding fixed families."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def exemplar(n: int) -> dict[str, str]:
    return {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}


def series(metric: Any) -> set[tuple[str, ...]]:
    """The label sets of ``metric``'s series, read through its public ``collect()``."""
    names = [name for name in metric.collect()[0].samples[0].labels if name != "le"]
    return {tuple(sample.labels[name] for name in names) for sample in metric.collect()[0].samples}


def test_counters_gauges_histograms_with_nasty_labels_match() -> None:
    """Label values with quotes, backslashes, newlines and unicode, label names sorting
    around ``le``, help texts needing escaping: the same bytes as prometheus-client."""
    registry = CollectorRegistry()
    doc = 'Help with "quotes", back\\slash and new\nline.'
    hits = ObskitCounter("hits_total", doc, ["zone", "a", "method"], registry=registry)
    depth = ObskitGauge("depth", doc, ["queue"], registry=registry)
    latency = ObskitHistogram("latency_seconds", doc, ["zone", "a"], registry=registry)
    plain = Histogram("plain_seconds", "Plain.", ["route"], registry=registry)
    for n, value in enumerate(NASTY):
        hits.labels(value, NASTY[-n], "GET").inc(n)
        depth.labels(value).set(FLOATS[n % len(FLOATS)])
        latency.labels(value, "x").observe(0.01 * n, exemplar(n) if n % 2 else None)
        plain.labels(value).observe(n)
    hits.labels("e", "x", "POST").inc(2, exemplar(7))  # a counter exemplar (OpenMetrics only)
    assert_identical(registry)
    for metric in (hits, depth, latency, plain):  # rendered by the fast path, not upstream's
        assert _fast_exposition.cached_label_sets(metric) == series(metric)


def test_special_values_and_labelless_and_empty_metrics_match() -> None:
    """+Inf, -Inf, NaN, tiny, huge and negative zero values; metrics without labels;
    labelled metrics with no series yet: the same bytes as prometheus-client."""
    registry = CollectorRegistry()
    empty = ObskitCounter("empty_total", "No series yet.", ["x"], registry=registry)
    assert not empty.collect()[0].samples
    ObskitHistogram("empty_seconds", "No series.", ["x"], registry=registry)
    single = ObskitCounter("single_total", "No labels.", registry=registry)
    single.inc(1e21)
    gauges = ObskitGauge("values", "Values.", ["n"], registry=registry)
    for n, value in enumerate([*FLOATS, float("nan"), 5e-324, 1.7976931348623157e308]):
        gauges.labels(str(n)).set(value)
    lone = ObskitGauge("lone", "Lone.", registry=registry)
    lone.set(float("nan"))
    wide = ObskitHistogram(
        "wide", "Wide.", ["k"], registry=registry, buckets=(-5, 0, 1e-9, 1234567.0, 1e21)
    )
    for value in (-10.0, -1.0, 0.0, 1e-10, 2e6, 1e22, float("inf")):
        wide.labels("v").observe(value, exemplar(3))
    free = ObskitHistogram("free_seconds", "No labels.", registry=registry)
    free.observe(0.2)
    assert_identical(registry)


def test_created_series_off_and_on_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """With prometheus-client's ``_created`` series disabled, and enabled again, the
    output follows it exactly."""
    registry = CollectorRegistry()
    ObskitCounter("c_total", "C.", ["x"], registry=registry).labels("1").inc()
    ObskitHistogram("h", "H.", ["x"], registry=registry).labels("1").observe(1)
    monkeypatch.setattr(client_metrics, "_use_created", False)
    assert b"_created" not in _fast_exposition.render(registry, True)
    assert_identical(registry)
    monkeypatch.setattr(client_metrics, "_use_created", True)
    assert b"_created" in _fast_exposition.render(registry, True)
    assert_identical(registry)


def test_other_families_fall_back_to_prometheus_client() -> None:
    """Summaries, info, enums, a gauge with set_function, a unit, custom collectors of
    every type and a target_info registry come out as prometheus-client renders them."""
    registry = CollectorRegistry(target_info={"service": 'a "b"'})
    Summary("s_seconds", "S.", ["x"], registry=registry).labels("y").observe(3)
    Info("build", "Build.", registry=registry).info({"version": "1\n2"})
    Enum("state", "State.", states=["a", "b"], registry=registry).state("b")
    Gauge("fn", "Fn.", registry=registry).set_function(lambda: 42)
    labelled = ObskitGauge("fnl", "Fn labelled.", ["k"], registry=registry)
    labelled.labels("a").set(1)
    labelled.labels("b").set(7)
    assert_identical(registry)  # fast, then a series gets its own function:
    labelled.labels("b").set_function(lambda: 7)
    ObskitCounter("sized_bytes", "Sized.", ["k"], unit="bytes", registry=registry).labels("a").inc()
    histogram = HistogramMetricFamily("ch", "Custom.", labels=["k"])
    histogram.add_metric(["v"], [("1.0", 1), ("+Inf", 2)], 3.5)
    counter = CounterMetricFamily("cc", "Custom.", labels=["k"])
    counter.add_metric(["v"], 4, timestamp=1700000000.5)
    summary = SummaryMetricFamily("cs", "Custom.", count_value=2, sum_value=1.5)
    gauge_histogram = GaugeHistogramMetricFamily("cgh", "Custom.", [("1.0", 1), ("+Inf", 2)], 9)
    stateset = StateSetMetricFamily("css", "Custom.", {"on": True, "off": False})
    info = InfoMetricFamily("ci", "Custom.", {"a": "b"})
    unknown = UnknownMetricFamily("cu", "Custom.", 1.5)
    gauge = GaugeMetricFamily("cg", "Custom.", 2)
    families = (histogram, counter, summary, gauge_histogram, stateset, info, unknown, gauge)
    registry.register(Families(*families))
    registry.register(Families())  # a collector with nothing to say
    assert_identical(registry)


def test_obskit_registry_with_self_counters_and_process_collectors_matches() -> None:
    """obskit's own registry after init (obskit_* counters, process/platform/GC
    collectors, traced-function histogram): the same bytes as prometheus-client, with
    the per-scrape process values frozen so both renderings see the same numbers."""
    obskit.init(service_name="exposition")
    status.decide(True)
    hits = obskit.counter("orders_total", "Orders.", ["status"])
    with obskit.span("work"):
        hits.labels("ok").inc()
        obskit.histogram("work_seconds", "Work.", ["kind"]).labels("a").observe(0.3)
    registry = _metrics.store().registry
    frozen = CollectorRegistry()
    process = {"ProcessCollector", "PlatformCollector", "GCCollector"}
    for collector in list(registry._collector_to_names):
        if type(collector).__name__ in process:
            frozen.register(Families(*collector.collect()))  # process values: snapshot
        else:
            frozen.register(collector)
    assert _fast_exposition.render(frozen, True).count(b"# TYPE") > 5
    assert_identical(frozen)


def test_cache_follows_removed_cleared_and_new_children() -> None:
    """A child's cached text goes with it: after remove(), clear() and new label sets,
    and after a bucket's exemplar changes, the output still matches."""
    registry = CollectorRegistry()
    latency = ObskitHistogram("lat", "Lat.", ["k"], registry=registry)
    hits = ObskitCounter("hits", "Hits.", ["k"], registry=registry)
    for key in "abc":
        latency.labels(key).observe(0.1, exemplar(1))
        hits.labels(key).inc()
    assert_identical(registry)
    latency.remove("b")
    hits.clear()
    hits.labels("z").inc(3)
    latency.labels("a").observe(0.1, exemplar(2))  # same bucket, a newer exemplar
    latency.labels("d").observe(7)
    ours = _fast_exposition.render(registry, True)
    assert _fast_exposition.cached_label_sets(latency) == {("a",), ("c",), ("d",)}
    assert b'k="b"' not in ours
    assert exemplar(2)["trace_id"].encode() in ours
    assert_identical(registry)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.text(max_size=12), min_size=1, max_size=4, unique=True),
    amount=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_label_value_and_value_match(values: list[str], amount: float) -> None:
    """Property: any unicode label values and any float value render as prometheus-client does."""
    registry = CollectorRegistry()
    gauge = ObskitGauge("g", "G.", ["v"], registry=registry)
    histogram = ObskitHistogram("h", "H.", ["v"], registry=registry)
    counter = ObskitCounter("c", "C.", ["v"], registry=registry)
    for value in values:
        gauge.labels(value).set(amount)
        histogram.labels(value).observe(amount, {"trace_id": value[:20]})
        if amount >= 0:
            counter.labels(value).inc(amount)
    assert_identical(registry)


def test_a_surprise_in_the_fast_path_falls_back_to_prometheus_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the fast path fails on a family (a mock failure: nothing real makes it fail),
    prometheus-client renders that family and the scrape is still byte-identical."""
    registry = CollectorRegistry()
    ObskitCounter("req", "Requests.", ["route"], registry=registry).labels('/a"b').inc()
    ObskitHistogram("lat", "Latency.", ["route"], registry=registry).labels("/").observe(0.2)

    def broken(*args: object) -> bool:
        raise RuntimeError("surprise")

    monkeypatch.setattr(_fast_exposition, "_render_fast", broken)
    assert_identical(registry)


ACCEPTS = [
    "",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=dots",
    "application/openmetrics-text",
    "application/openmetrics-text; version=2.0.0; escaping=values",
]


def _nasty_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    hits = ObskitCounter("req", "Requests.", ["route"], registry=registry)
    latency = ObskitHistogram("lat", "Latency.", ["route", "zone"], registry=registry)
    for n, value in enumerate(NASTY):
        hits.labels(value).inc(n)
        latency.labels(value, "z").observe(0.05 * n, exemplar(n))
    Summary("sum", "Summary.", registry=registry).observe(1)
    return registry


def _scrapes(registry: Any) -> dict[tuple[str, str], tuple[int, dict[str, str], bytes]]:
    """obskit's WSGI app answers (body un-gzipped) for each Accept header, plain and gzip."""
    app = _exposition.make_wsgi_app(registry)
    found = {}
    for accept in ACCEPTS:
        for encoding in ("", "gzip"):
            code, headers, body = wsgi_request(
                app, "/metrics", [("Accept", accept), ("Accept-Encoding", encoding)]
            )
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            found[(accept, encoding)] = (code, headers, body)
    return found


def test_wsgi_scrapes_are_the_same_with_the_accelerator_and_with_prometheus_client() -> None:
    """For each format, escaping and gzip: the accelerator's answers are prometheus-client's
    ``make_wsgi_app`` answers, and the same as obskit's with the accelerator off."""
    registry = _nasty_registry()
    fast = _scrapes(registry)
    assert encoder_function(_exposition.choose_encoder("")[0]) is _fast_exposition.render
    reference = make_wsgi_app(registry)
    for (accept, encoding), (code, headers, body) in fast.items():
        theirs = wsgi_request(
            reference, "/metrics", [("Accept", accept), ("Accept-Encoding", encoding)]
        )
        unzipped = gzip.decompress(theirs[2]) if encoding else theirs[2]
        assert (code, headers, body) == (theirs[0], theirs[1], unzipped), accept
    status.decide(False)
    assert _exposition.choose_encoder("")[0] is text_exposition.generate_latest
    assert _scrapes(registry) == fast


def test_a_probe_that_renders_differently_turns_the_accelerator_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if a prometheus-client release escaped label values differently: the check's
    probe reports it, ``obskit_fast_path_enabled{path="exposition"}`` reads 0, and
    /metrics is prometheus-client's own encoders' output, byte for byte, gzip too."""
    registry = _nasty_registry()
    monkeypatch.setattr(_fast_exposition, "_label_value", lambda value: value)  # no escaping
    status.decide(True)
    (exposition,) = [item for item in status.statuses() if item.path == "exposition"]
    assert not exposition.enabled
    assert exposition.reason == "a probe registry renders differently from prometheus-client's text"
    gauge = {s.labels["path"]: s.value for s in openmetrics()["obskit_fast_path_enabled"].samples}
    assert gauge["exposition"] == 0.0
    encoder, _ = _exposition.choose_encoder("application/openmetrics-text")
    assert encoder_function(encoder) is om_exposition.generate_latest
    reference = make_wsgi_app(registry)
    for (accept, encoding), (code, headers, body) in _scrapes(registry).items():
        theirs = wsgi_request(
            reference, "/metrics", [("Accept", accept), ("Accept-Encoding", encoding)]
        )
        assert (code, headers) == theirs[:2]
        assert body == (gzip.decompress(theirs[2]) if encoding else theirs[2])
    assert _fast_exposition.render(registry, True) == upstream(registry, True)


def test_a_changed_registry_layout_turns_the_accelerator_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if a release renamed a mirrored method's private reads: the layout check names
    the method, and the rendering is prometheus-client's."""
    changed = dict(_fast_exposition._MIRRORED)
    changed[Histogram._child_samples] = ("_upper_bounds", "_buckets_v2")
    monkeypatch.setattr(_fast_exposition, "_MIRRORED", changed)
    status.decide(True)
    (exposition,) = [item for item in status.statuses() if item.path == "exposition"]
    assert not exposition.enabled
    assert "Histogram._child_samples no longer reads ['_buckets_v2']" in exposition.reason
    registry = _nasty_registry()
    assert _fast_exposition.render(registry, False) == upstream(registry, False)


_MULTIPROCESS = textwrap.dedent(
    """
    import json, sys
    import obskit
    from obskit._fast import status
    from obskit._fast import exposition as _fast_exposition
    from obskit._metrics import registry as _metrics
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om
    obskit.init(service_name="mp")
    status.decide(True)
    hits = obskit.counter("mp_hits_total", "Hits.", ["user"])
    latency = obskit.histogram("mp_seconds", "Latency.", ["user"])
    with obskit.span("a"):
        for n in range(20):
            hits.labels(f'u"{n}').inc()
            latency.labels(f"u\\\\{n}").observe(0.01 * n)
    registry = _metrics.store().exposition()
    render = _fast_exposition.render
    print(json.dumps({
        "multiprocess": _metrics.store().multiprocess is not None,
        "on": status.enabled("exposition"),
        "text": render(registry, False) == generate_latest(registry),
        "om": render(registry, True) == om(registry),
        "exemplar": b"trace_id" in render(registry, True),
    }))
    """
)


def test_multiprocess_merge_renders_as_prometheus_client(tmp_path: Path) -> None:
    """In multiprocess mode (a real process with PROMETHEUS_MULTIPROC_DIR) the merged
    registry renders exactly as prometheus-client does, exemplars included."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = run_python(_MULTIPROCESS, env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {"multiprocess": True, "on": True, "text": True, "om": True, "exemplar": True}
    assert result == expected
