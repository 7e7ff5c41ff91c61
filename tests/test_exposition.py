"""obskit's fast /metrics exposition is byte-identical to prometheus-client's encoders."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import textwrap
import urllib.request
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
    make_asgi_app,
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
from obskit._metrics import exposition as _exposition
from obskit._metrics import registry as _metrics
from obskit._metrics.registry import ObskitCounter, ObskitGauge, ObskitHistogram
from tests.conftest import wsgi_request
from tests.servers import run_python

ROOT = Path(__file__).resolve().parent.parent
ESCAPINGS = ("underscores", "dots", "values", "allow-utf-8")
NASTY = ['say "hi"', "back\\slash", "new\nline", "ünïcödé ✓ 日本", "", "le", "\\n x", "}{,="]
FLOATS = [0.0, -0.0, 1.0, -2.5, 1e-9, 1e21, 123456789.0, 1234567.5, float("inf"), float("-inf")]


def upstream(registry: Any, openmetrics: bool, escaping: str = "underscores") -> bytes:
    """prometheus-client's own rendering (the reference)."""
    if openmetrics:
        return bytes(om_exposition.generate_latest(registry, escaping=escaping))
    return bytes(text_exposition.generate_latest(registry, escaping=escaping))


def assert_identical(registry: Any) -> None:
    """obskit's rendering equals prometheus-client's in both formats and every escaping."""
    for openmetrics in (False, True):
        for escaping in ESCAPINGS:
            ours = _exposition.render(registry, openmetrics, escaping)
            assert ours == upstream(registry, openmetrics, escaping), (openmetrics, escaping)


class Families:
    """A custom collector yielding fixed families."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def exemplar(n: int) -> dict[str, str]:
    return {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}


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
        cached = metric.__dict__["_obskit_exposition"][1]
        assert cached.keys() == metric._metrics.keys()


def test_special_values_and_labelless_and_empty_metrics_match() -> None:
    """+Inf, -Inf, NaN, tiny, huge and negative zero values; metrics without labels;
    labelled metrics with no series yet: the same bytes as prometheus-client."""
    registry = CollectorRegistry()
    empty = ObskitCounter("empty_total", "No series yet.", ["x"], registry=registry)
    assert not empty._metrics
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
    assert b"_created" not in _exposition.render(registry, True)
    assert_identical(registry)
    monkeypatch.setattr(client_metrics, "_use_created", True)
    assert b"_created" in _exposition.render(registry, True)
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
    hits = obskit.counter("orders_total", "Orders.", ["status"])
    with obskit.span("work"):
        hits.labels("ok").inc()
        obskit.histogram("work_seconds", "Work.", ["kind"]).labels("a").observe(0.3)
    registry = _metrics.store().registry
    frozen = CollectorRegistry()
    for collector in list(registry._collector_to_names):
        if type(collector).__module__.startswith("prometheus_client.") and not hasattr(
            collector, "_labelnames"
        ):
            frozen.register(Families(*collector.collect()))  # process values: snapshot
        else:
            frozen.register(collector)
    assert _exposition.render(frozen, True).count(b"# TYPE") > 5
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
    ours = _exposition.render(registry, True)
    assert latency.__dict__["_obskit_exposition"][1].keys() == {("a",), ("c",), ("d",)}
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


ACCEPTS = [
    "",
    "text/plain",
    "text/plain; version=0.0.4",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=dots",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=2.0.0; escaping=values",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/json",
]


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ObskitCounter("req", "Requests.", ["route"], registry=registry).labels('/a"b').inc()
    ObskitHistogram("lat", "Latency.", ["route"], registry=registry).labels("/").observe(
        0.2, exemplar(5)
    )
    Summary("sum", "Summary.", registry=registry).observe(1)
    return registry


@pytest.mark.parametrize("accept", ACCEPTS)
def test_negotiation_and_wsgi_responses_match(accept: str) -> None:
    """For each Accept header: the same content type as prometheus-client's negotiation,
    and obskit's WSGI app answers with the same status, headers and body (gzip too)."""
    registry = _registry()
    ours, theirs = _exposition.make_wsgi_app(registry), make_wsgi_app(registry)
    _, content_type = text_exposition.choose_encoder(accept)
    assert _exposition.choose_encoder(accept)[1] == content_type
    for encoding in ("", "gzip", "br, gzip;q=0.5"):
        headers = [("Accept", accept), ("Accept-Encoding", encoding)]
        mine = wsgi_request(ours, "/metrics", headers)
        reference = wsgi_request(theirs, "/metrics", headers)
        assert mine[:2] == reference[:2]
        assert mine[1]["Content-Type"] == content_type
        if "gzip" in encoding:
            assert mine[1]["Content-Encoding"] == "gzip"
            assert gzip.decompress(mine[2]) == gzip.decompress(reference[2])
        else:
            assert mine[2] == reference[2]


def test_wsgi_methods_favicon_and_name_filter_match() -> None:
    """OPTIONS, POST, /favicon.ico and ``?name[]=`` get prometheus-client's answers."""
    registry = _registry()
    ours, theirs = _exposition.make_wsgi_app(registry), make_wsgi_app(registry)

    def call(app: Any, method: str, path: str, query: str = "") -> tuple[Any, ...]:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_ACCEPT": "application/openmetrics-text",
        }
        reply: list[Any] = []
        body = app(environ, lambda status, headers: reply.extend([status, headers]))
        return (*reply, b"".join(body))

    for method, path, query in [
        ("OPTIONS", "/metrics", ""),
        ("POST", "/metrics", ""),
        ("GET", "/favicon.ico", ""),
        ("GET", "/metrics", "name[]=req_total&name[]=lat_bucket"),
    ]:
        assert call(ours, method, path, query) == call(theirs, method, path, query)
    assert b"lat_bucket" in call(ours, "GET", "/metrics", "name[]=lat_bucket")[2]


def test_asgi_app_matches() -> None:
    """obskit's ASGI app answers as prometheus-client's does, in both formats and gzipped."""
    registry = _registry()

    async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "headers": headers, "query_string": b""}
        await app(scope, receive, send)
        return sent

    for headers in (
        [],
        [(b"accept", b"application/openmetrics-text")],
        [(b"Accept", b"text/plain"), (b"accept-encoding", b"gzip")],
    ):
        mine = asyncio.run(call(_exposition.make_asgi_app(registry), headers))
        reference = asyncio.run(call(make_asgi_app(registry), headers))
        assert mine[0] == reference[0]
        unzip = gzip.decompress if headers and b"gzip" in headers[-1][1] else bytes
        assert unzip(mine[1]["body"]) == unzip(reference[1]["body"])


def test_metrics_wsgi_app_serves_the_fast_rendering() -> None:
    """``obskit.metrics_wsgi_app()`` serves the fast rendering: the OpenMetrics body
    carries the histogram's trace exemplar and equals prometheus-client's bytes."""
    obskit.init(service_name="exposition", metrics_process_collectors=False)
    with obskit.span("work"):
        obskit.histogram("job_seconds", "Jobs.", ["kind"]).labels("a").observe(0.2)
    status, headers, body = wsgi_request(
        obskit.metrics_wsgi_app(), "/metrics", [("Accept", "application/openmetrics-text")]
    )
    assert status == 200
    assert headers["Content-Type"] == om_exposition.CONTENT_TYPE_LATEST
    assert b'job_seconds_bucket{kind="a",le="0.25"} 1.0 # {span_id="' in body
    assert body == upstream(_metrics.store().registry, True)


_MULTIPROCESS = textwrap.dedent(
    """
    import json, sys
    import obskit
    from obskit._metrics import exposition as _exposition
    from obskit._metrics import registry as _metrics
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om
    obskit.init(service_name="mp")
    hits = obskit.counter("mp_hits_total", "Hits.", ["user"])
    latency = obskit.histogram("mp_seconds", "Latency.", ["user"])
    with obskit.span("a"):
        for n in range(20):
            hits.labels(f'u"{n}').inc()
            latency.labels(f"u\\\\{n}").observe(0.01 * n)
    registry = _metrics.store().exposition()
    print(json.dumps({
        "multiprocess": _metrics.store().multiprocess is not None,
        "text": _exposition.render(registry, False) == generate_latest(registry),
        "om": _exposition.render(registry, True) == om(registry),
        "exemplar": b"trace_id" in _exposition.render(registry, True),
    }))
    """
)


def test_multiprocess_mode_falls_back_to_prometheus_client(tmp_path: Path) -> None:
    """In multiprocess mode (a real process with PROMETHEUS_MULTIPROC_DIR) the merged
    registry renders exactly as prometheus-client does, exemplars included."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = run_python(_MULTIPROCESS, env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"multiprocess": True, "text": True, "om": True, "exemplar": True}


def test_standalone_metrics_server_serves_the_fast_rendering() -> None:
    """``init(metrics_port=...)`` serves the same bytes as prometheus-client renders, with
    its content types, over real HTTP (OpenMetrics when asked, gzip when accepted)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = obskit.init(metrics_port=port, metrics_process_collectors=False)
    assert handle.metrics_server is not None
    with obskit.span("work"):
        obskit.histogram("served_seconds", "Served.", ["kind"]).labels('a"b').observe(0.2)
    registry = _metrics.store().registry
    for accept, openmetrics in (("application/openmetrics-text", True), ("", False)):
        for encoding in ("", "gzip"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics",
                headers={"Accept": accept, "Accept-Encoding": encoding},
            )
            with urllib.request.urlopen(request, timeout=5) as reply:
                body, headers = reply.read(), reply.headers
            assert headers["Content-Type"] == text_exposition.choose_encoder(accept)[1]
            if encoding:
                assert headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(body)
            assert body == upstream(registry, openmetrics)


def test_a_surprise_in_the_fast_path_falls_back_to_prometheus_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the fast path fails on a family (a mock failure: nothing real makes it fail),
    prometheus-client renders that family and the scrape is still byte-identical."""
    registry = _registry()

    def broken(*args: object) -> bool:
        raise RuntimeError("surprise")

    monkeypatch.setattr(_exposition, "_render_fast", broken)
    assert_identical(registry)
