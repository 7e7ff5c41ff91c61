"""obskit's registry: idempotent metrics, exemplars, the series cap, exposition, self-telemetry."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import prometheus_client
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._lifecycle import self_stats as _self_stats
from tests.conftest import openmetrics, wsgi_request
from tests.receivers import OtlpHttpReceiver


def test_same_definition_returns_the_same_metric() -> None:
    """Asking again (re-import, re-init) returns the very same object; no duplicate error."""
    first = obskit.counter("orders_total", "Orders.", ["status"])
    assert obskit.counter("orders_total", "Orders.", ["status"]) is first
    assert obskit.counter("orders", "Orders.", ["status"]) is first  # _total is implied
    obskit.init()
    assert obskit.counter("orders_total", "Orders.", ["status"]) is first
    hist = obskit.histogram("latency_seconds", "Latency.", ["route"])
    assert obskit.histogram("latency_seconds", "Latency.", ["route"]) is hist
    gauge = obskit.gauge("queue_depth", "Depth.")
    assert obskit.gauge("queue_depth") is gauge


def test_conflicting_redefinition_is_a_config_error() -> None:
    """Another type or other labels under the same name fail with a clear ConfigError."""
    obskit.counter("jobs_total", "Jobs.", ["queue"])
    with pytest.raises(obskit.ConfigError, match="already defined as a counter") as caught:
        obskit.gauge("jobs", "Jobs.")
    assert caught.value.setting == "metric"
    with pytest.raises(obskit.ConfigError, match=r"labels \['queue'\]"):
        obskit.counter("jobs_total", "Jobs.", ["queue", "host"])
    with pytest.raises(obskit.ConfigError, match="Reserved label"):
        obskit.counter("fine_total", "x", ["__reserved"])


def test_metrics_never_go_to_the_global_registry() -> None:
    """obskit's metrics live in its own registry, not prometheus-client's REGISTRY."""
    obskit.counter("private_total", "x").inc()
    obskit.init()
    exposed = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "private_total" not in exposed
    assert "private_total" in openmetrics()["private"].samples[0].name


def test_histogram_observation_in_a_sampled_span_carries_its_exemplar(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """User histograms get the current sampled span's ids as exemplar automatically."""
    spans()
    latency = obskit.histogram("checkout_seconds", "Checkout.", ["step"])
    with trace.get_tracer("t").start_as_current_span("checkout") as span:
        latency.labels("pay").observe(0.2)
    latency.labels("ship").observe(0.3)  # outside any span: no exemplar
    samples = openmetrics()["checkout_seconds"].samples
    exemplars = {s.labels["step"]: s.exemplar for s in samples if s.exemplar is not None}
    assert set(exemplars) == {"pay"}
    assert exemplars["pay"].labels["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert exemplars["pay"].value == 0.2


def test_oversized_exemplar_is_dropped_and_counted_not_raised() -> None:
    """A custom exemplar over 128 runes (multibyte too) is dropped; the value is counted."""
    obskit.init()
    latency = obskit.histogram("upload_seconds", "Upload.")
    before = _self_stats.value("obskit_dropped", signal="exemplars", reason="too_long")
    latency.observe(1.0, {"trace_id": "é" * 129})
    latency.observe(1.0, {"k": "x" * 127})  # 1 + 127 = 128: fits
    count = next(s for s in openmetrics()["upload_seconds"].samples if s.name.endswith("_count"))
    assert count.value == 2
    assert _self_stats.value("obskit_dropped", signal="exemplars", reason="too_long") == before + 1


def test_label_sets_beyond_the_cap_go_to_one_overflow_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 distinct values with a cap of 50: at most 51 series, the rest counted."""
    obskit.init(metrics_max_series=50, log_stdlib=False)
    caplog.set_level(logging.WARNING, logger="obskit")
    hits = obskit.counter("hits_total", "Hits.", ["user"])
    for n in range(10_000):
        hits.labels(f"user-{n}").inc()
    hits.labels(user="user-3").inc()  # an existing series still works by keyword
    samples = [s for s in openmetrics()["hits"].samples if s.name == "hits_total"]
    assert len(samples) == 51
    by_user = {s.labels["user"]: s.value for s in samples}
    assert by_user["__overflow__"] == 10_000 - 50
    assert by_user["user-3"] == 2
    overflow = openmetrics()["obskit_metric_overflow"].samples
    # obskit's self-counters live for the process: other tests' metrics may be there too
    assert [
        s.value for s in overflow if s.name.endswith("_total") and s.labels == {"metric": "hits"}
    ] == [10_000 - 50]
    warnings = [r for r in caplog.records if "reached 50 label sets" in r.getMessage()]
    assert len(warnings) == 1


def test_process_collectors_are_on_by_default_and_can_be_turned_off() -> None:
    """process_*, python_info and python_gc_* metrics are included unless disabled."""
    obskit.init()
    assert {"process_cpu_seconds", "python_info", "python_gc_collections"} <= set(openmetrics())
    obskit.init(metrics_process_collectors=False)
    assert "process_cpu_seconds" not in openmetrics()
    assert "python_info" not in openmetrics()


def test_histogram_buckets_are_configurable(spans: Callable[..., InMemorySpanExporter]) -> None:
    """histogram_buckets sets @traced's buckets; a re-init with new buckets applies them."""

    @obskit.traced
    def job() -> None:
        pass

    spans(histogram_buckets="0.1,1")
    job()
    bounds = {
        s.labels["le"]
        for s in openmetrics()["obskit_function_duration_seconds"].samples
        if "le" in s.labels
    }
    assert bounds == {"0.1", "1.0", "+Inf"}
    spans(histogram_buckets=[0.5, 2, 8])
    job()
    bounds = {
        s.labels["le"]
        for s in openmetrics()["obskit_function_duration_seconds"].samples
        if "le" in s.labels
    }
    assert bounds == {"0.5", "2.0", "8.0", "+Inf"}


def _wsgi_get(
    app: Callable[..., Any], headers: dict[str, str]
) -> tuple[str, dict[str, str], bytes]:
    """GET /metrics from a WSGI app as a server would."""
    code, reply_headers, body = wsgi_request(app, "/metrics", headers.items())
    return f"{code} OK" if code == 200 else str(code), reply_headers, body


def test_wsgi_exposition_negotiates_openmetrics_and_gzip(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """OpenMetrics (with exemplars) when asked for, Prometheus text otherwise, gzip if accepted."""
    spans()
    obskit.traced(lambda: None)()
    app = obskit.metrics_wsgi_app()
    status, headers, body = _wsgi_get(app, {"Accept": "application/openmetrics-text"})
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert b'# {span_id="' in body
    assert body.endswith(b"# EOF\n")
    _, headers, body = _wsgi_get(app, {"Accept": "text/plain"})
    assert headers["Content-Type"].startswith("text/plain")
    assert b"obskit_function_duration_seconds_bucket" in body
    assert b"trace_id" not in body
    _, headers, body = _wsgi_get(app, {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b"obskit_function_duration_seconds" in gzip.decompress(body)


def test_asgi_exposition_serves_the_registry() -> None:
    """The ASGI app answers an HTTP scope (driven through the ASGI protocol) with metrics."""
    obskit.init()
    obskit.counter("asgi_total", "x").inc()
    app = obskit.metrics_asgi_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [(b"accept", b"application/openmetrics-text")],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b"asgi_total 1.0" in b"".join(m.get("body", b"") for m in sent)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_standalone_metrics_server_serves_restarts_and_stops() -> None:
    """init(metrics_port=...) serves /metrics; same port on re-init keeps it; shutdown frees it."""
    port = _free_port()
    handle = obskit.init(metrics_port=port, metrics_addr="127.0.0.1")
    obskit.counter("served_total", "x").inc()
    url = f"http://127.0.0.1:{port}/metrics"
    assert b"served_total 1.0" in urllib.request.urlopen(url, timeout=5).read()
    server = handle.metrics_server
    assert server is not None
    again = obskit.init(metrics_port=port, metrics_addr="127.0.0.1", service_name="new")
    assert again.metrics_server is server  # same address: kept, not restarted
    assert b"served_total" in urllib.request.urlopen(url, timeout=5).read()
    obskit.shutdown()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_metrics_port_in_use_is_logged_once_and_served_once_free(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A taken port gives one warning line; the app (and init) carry on, and obskit
    serves the port once the process holding it lets it go."""
    from obskit._metrics import server as _server

    monkeypatch.setattr(_server, "RETRY_SECONDS", 0.05)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        handle = obskit.init(metrics_port=port, metrics_addr="127.0.0.1")
        assert handle.metrics_server is not None
        assert not handle.metrics_server.serving
        time.sleep(0.3)  # several retries while the port is still taken
    obskit.counter("served_total", "Served.").inc()
    body = b""
    for _ in range(200):  # bounded: the keeper retries every 0.05 s
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                body = reply.read()
            break
        except OSError:
            time.sleep(0.05)
    assert b"served_total 1.0" in body
    assert handle.metrics_server.serving
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    warnings = [line for line in lines if "cannot serve /metrics" in line["event"]]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert "once it is free" in warnings[0]["event"]


def test_self_telemetry_counts_exported_spans_and_export_failures(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """obskit_spans_exported_total and obskit_export_errors_total follow real exports."""

    def exposed(family: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(sorted(s.labels.values())): s.value
            for s in openmetrics()[family].samples
            if s.name.endswith("_total")
        }

    # The counters are process-wide: compare against the values before this test.
    exported_before = exposed("obskit_spans_exported").get((), 0)
    errors_before = exposed("obskit_export_errors").get(("connection_refused", "traces"), 0)
    handle = obskit.init(otlp_endpoint=http_receiver.endpoint)
    with trace.get_tracer("t").start_as_current_span("ok"):
        pass
    handle.force_flush(timeout=10)
    assert exposed("obskit_spans_exported")[()] == exported_before + 1
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens: connection refused
    handle = obskit.init(otlp_endpoint=dead, otlp_timeout=1)
    with trace.get_tracer("t").start_as_current_span("lost"):
        pass
    handle.force_flush(timeout=10)
    assert exposed("obskit_export_errors")[("connection_refused", "traces")] == errors_before + 1
    assert exposed("obskit_dropped")[("export_failed", "traces")] >= 1


def test_removed_and_cleared_label_sets_free_room_under_the_cap() -> None:
    """The cap counts the label sets in use (the overflow series too): after remove(),
    remove_by_labels() (where prometheus-client has it) and clear() new label sets get
    series of their own again."""
    from obskit._metrics.registry import label_values

    obskit.init(metrics_max_series=3, log_stdlib=False)
    hits = obskit.counter("room_total", "Room.", ["user", "zone"])
    for user in "abc":
        hits.labels(user, "z").inc()
    assert label_values(hits.labels("d", "z")) == ("__overflow__", "__overflow__")
    hits.remove("a", "z")
    hits.remove("b", "z")  # c and the overflow series left: room for one
    assert label_values(hits.labels("d", "z")) == ("d", "z")
    assert label_values(hits.labels("e", "z")) == ("__overflow__", "__overflow__")
    if hasattr(hits, "remove_by_labels"):  # prometheus-client 0.24 and later
        hits.remove_by_labels({"user": "d"})
    else:
        hits.remove("d", "z")
    assert label_values(hits.labels(user="e", zone="z")) == ("e", "z")
    assert label_values(hits.labels("f", "z")) == ("__overflow__", "__overflow__")
    hits.clear()
    for user in "xyz":
        assert label_values(hits.labels(user, "z")) == (user, "z")
    users = {s.labels["user"] for s in openmetrics()["room"].samples if s.name == "room_total"}
    assert users == set("xyz")


def test_long_label_values_are_cut_alike_in_labels_and_remove() -> None:
    """A label value over 1,024 characters is cut in labels() and in remove() alike, so
    remove() finds the series labels() made."""
    hits = obskit.counter("long_total", "Long.", ["path"])
    value = "x" * 5000
    hits.labels(value).inc()
    (sample,) = [s for s in openmetrics()["long"].samples if s.name == "long_total"]
    assert sample.labels["path"] == "x" * 1024
    hits.remove(value)
    assert [s for s in openmetrics()["long"].samples if s.name == "long_total"] == []


def test_observing_a_labelled_histogram_without_labels_raises_prometheus_clients_error() -> None:
    """``observe()`` on a labelled histogram itself (not a child) raises the ValueError
    prometheus-client raises, with the accelerators on or off."""
    for fast_paths in (True, False):
        obskit.init(fast_paths=fast_paths)
        latency = obskit.histogram("parent_seconds", "Parent.", ["route"])
        with pytest.raises(ValueError, match="missing label values"):
            latency.observe(1.0)


def test_exemplars_come_only_from_valid_sampled_spans() -> None:
    """exemplar_of (any span) and exemplar_from (a request's ids made at its start) agree:
    the hex ids of a valid sampled span; None for unsampled, invalid or no span."""
    from opentelemetry.trace import (
        INVALID_SPAN,
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
    )

    from obskit._metrics.registry import exemplar_from, exemplar_of
    from obskit._traces.ids import hex_ids

    sampled = SpanContext(0xAB, 0xCD, False, TraceFlags(TraceFlags.SAMPLED))
    expected = {"trace_id": f"{0xAB:032x}", "span_id": f"{0xCD:016x}"}
    assert exemplar_of(NonRecordingSpan(sampled)) == expected
    assert exemplar_from(hex_ids(sampled)) == expected
    unsampled = SpanContext(0xAB, 0xCD, False, TraceFlags(TraceFlags.DEFAULT))
    invalid_sampled = SpanContext(0, 0, False, TraceFlags(TraceFlags.SAMPLED))
    for context in (unsampled, invalid_sampled):
        assert exemplar_of(NonRecordingSpan(context)) is None
        assert exemplar_from(hex_ids(context)) is None
    assert exemplar_of(INVALID_SPAN) is None
    assert exemplar_of(None) is None
