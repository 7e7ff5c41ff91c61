"""The histogram accelerator (obskit/_fast/histogram.py) records what prometheus-client's
``Histogram.observe`` and ``Gauge.inc`` record; when its check fails, the public calls serve
the same contract."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.values import MutexValue

import obskit
from obskit._fast import histogram as _fast_histogram
from obskit._fast import status
from obskit._metrics import registry as _registry
from tests.conftest import openmetrics
from tests.servers import run_python

ROOT = Path(__file__).resolve().parents[2]
#: Bucket edges, just above them, below the first, above the last, infinities, NaN.
VALUES = [0.0, -0.0, -1.0, 0.005, 0.0050001, 0.3, 1.0, 9.99, 10.0, 11.0, math.inf]
VALUES += [-math.inf, math.nan, 1e-300, 123456.0]


@pytest.fixture(autouse=True)
def _accelerators_on() -> None:
    """These tests compare the accelerator with the public calls: it must be on (whatever
    the environment asks for the rest of the suite)."""
    status.decide(True)
    assert status.enabled("histogram")


def exemplar(n: int) -> dict[str, str]:
    return {"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}


def samples(metric: Any) -> list[tuple[Any, ...]]:
    """A metric's samples, comparable: NaN as text, no ``_created``, each exemplar as its
    labels and value (and whether it has a timestamp)."""
    found = []
    for sample in metric.collect()[0].samples:
        if sample.name.endswith("_created"):
            continue
        example = sample.exemplar
        if example is not None:
            example = (example.labels, repr(example.value), example.timestamp is not None)
        found.append((sample.name.split("_", 1)[1], sample.labels, repr(sample.value), example))
    return found


def pair(kind: type, **options: Any) -> tuple[Any, Any]:
    """Two fresh metrics of ``kind`` with the same definition (labels ``k``)."""
    registry = CollectorRegistry()
    return tuple(  # type: ignore[return-value]
        kind(f"{name}_probe", "P.", ["k"], registry=registry, **options) for name in ("a", "b")
    )


def test_observe_fills_the_buckets_sum_and_exemplars_prometheus_client_fills() -> None:
    """Edges, negative zero, infinities and NaN land in the same buckets with the same sum,
    and each bucket keeps the same exemplar (labels and value), as Histogram.observe."""
    ours, theirs = pair(Histogram)
    for n, value in enumerate(VALUES):
        example = exemplar(n) if n % 3 else None
        _fast_histogram.observe(ours.labels("x"), value, example)
        theirs.labels("x").observe(value, example)
    assert samples(ours) == samples(theirs)
    counts = [s for s in samples(theirs) if s[0] == "probe_count"]
    assert counts == [("probe_count", {"k": "x"}, repr(float(len(VALUES) - 1)), None)]  # NaN: none


def test_observe_of_a_histogram_without_labels_and_custom_buckets() -> None:
    """A histogram without labels, with negative and integer bucket bounds: the same values."""
    registry = CollectorRegistry()
    options: dict[str, Any] = {"registry": registry, "buckets": (-5, 0, 1, 1e21)}
    ours, theirs = Histogram("ours", "O.", **options), Histogram("theirs", "T.", **options)
    for n, value in enumerate([-10.0, -5.0, 0.0, 0.5, 2.0, 1e22, -math.inf]):
        _fast_histogram.observe(ours, value, exemplar(n))
        theirs.observe(value, exemplar(n))
    assert samples(ours) == samples(theirs)


def test_add_moves_a_gauge_as_gauge_inc() -> None:
    """add() adds and subtracts exactly as Gauge.inc (fractions, infinities, NaN)."""
    ours, theirs = pair(Gauge)
    for amount in (1, -1, 0.1, 0.2, -0.30000000000000004, 1e300, 1e300, -1e300):
        _fast_histogram.add(ours.labels("x"), amount)
        theirs.labels("x").inc(amount)
        assert samples(ours) == samples(theirs)
    _fast_histogram.add(ours.labels("y"), math.nan)
    theirs.labels("y").inc(math.nan)
    assert samples(ours) == samples(theirs)


def test_observations_from_many_threads_are_all_counted() -> None:
    """Eight threads observing and adding concurrently: no observation lost (each bucket's
    count and the sum under their locks), as with the public calls."""
    histogram = Histogram("threads_seconds", "T.", ["k"], registry=None, buckets=(1.0, 2.0))
    gauge = Gauge("threads", "T.", ["k"], registry=None)
    child, gauge_child = histogram.labels("x"), gauge.labels("x")

    def work() -> None:
        for n in range(5000):
            _fast_histogram.observe(child, 0.5 if n % 2 else 1.5, None)
            _fast_histogram.add(gauge_child, 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_name = {
        s.name: s.value for s in histogram.collect()[0].samples if s.labels.get("le") != "1.0"
    }
    assert by_name["threads_seconds_count"] == 40_000
    assert by_name["threads_seconds_sum"] == 40_000.0
    assert [s.value for s in gauge.collect()[0].samples] == [40_000]


@pytest.mark.parametrize("on", [True, False], ids=["accelerator", "public"])
def test_obskit_histograms_record_the_same_either_way(
    spans: Callable[..., InMemorySpanExporter], on: bool
) -> None:
    """User histograms, @traced's histogram and the HTTP gauge's add: the same buckets,
    sums and trace exemplars with the accelerator on and with the public calls."""
    spans(service_name="fast-histogram", metrics_process_collectors=False)
    status.decide(on)
    assert status.enabled("histogram") is on
    latency = obskit.histogram("fh_seconds", "Latency.", ["step"])
    inflight = obskit.gauge("fh_active", "Active.", ["method"])

    @obskit.traced
    def job() -> None:
        pass

    with trace.get_tracer("t").start_as_current_span("work") as span:
        for value in (0.001, 0.3, 0.3, 20.0):
            latency.labels("pay").observe(value)
        job()
    latency.labels("ship").observe(0.2, {"custom": "yes"})
    _registry.add_trusted(inflight.labels("GET"), 2)
    _registry.add_trusted(inflight.labels("GET"), -1)
    trace_id = format(span.get_span_context().trace_id, "032x")
    families = openmetrics()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): (s.value, s.exemplar and s.exemplar.labels)
        for s in families["fh_seconds"].samples
        if not s.name.endswith("_created")
    }
    assert found[("fh_seconds_bucket", (("le", "0.5"), ("step", "pay")))] == (
        3.0,
        {"trace_id": trace_id, "span_id": format(span.get_span_context().span_id, "016x")},
    )
    assert found[("fh_seconds_sum", (("step", "pay"),))] == (pytest.approx(20.601), None)
    assert found[("fh_seconds_bucket", (("le", "+Inf"), ("step", "pay")))][0] == 4.0
    assert found[("fh_seconds_bucket", (("le", "0.25"), ("step", "ship")))] == (
        1.0,
        {"custom": "yes"},
    )
    (function,) = [
        s
        for s in families["obskit_function_duration_seconds"].samples
        if s.name.endswith("_count")
        and s.labels["function"].endswith(".job")
        and s.labels["outcome"] == "ok"
    ]
    assert function.value == 1.0
    assert [s.value for s in families["fh_active"].samples] == [1.0]


_MULTIPROCESS = """
    import json, os
    import obskit
    from obskit._fast import status
    from obskit._metrics import registry as _registry
    from obskit._metrics.multiprocess import read_exemplars

    obskit.init(service_name="mp", log_level="error")
    status.decide(True)
    fast_on = status.enabled("histogram")
    with obskit.span("a"):
        for name in ("fast", "public"):
            if name == "public":
                status.decide(False)
            histogram = obskit.histogram(f"mp_{name}_seconds", "Latency.", ["user"])
            gauge = obskit.gauge(f"mp_{name}_active", "Active.", ["user"])
            for n in range(30):
                histogram.labels(f"u{n % 3}").observe(0.01 * n)
                _registry.add_trusted(gauge.labels(f"u{n % 3}"), 1 if n % 2 else -1)
    path = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"exemplars_{os.getpid()}.obskit")
    exemplars = {
        name + json.dumps(labels): [example.labels["trace_id"], example.value]
        for (name, labels), example in read_exemplars(path).items()
    }
    merged = {}
    for family in _registry.store().exposition().collect():
        for sample in family.samples:
            key = sample.name + json.dumps(sorted(sample.labels.items()))
            found = sample.exemplar
            example = found and [found.labels["trace_id"], found.value]
            merged[key] = [sample.value, example]
    print(json.dumps({"fast_on": fast_on, "merged": merged, "exemplars": exemplars}))
"""


def test_multiprocess_values_and_exemplars_are_the_same_either_way(tmp_path: Path) -> None:
    """In multiprocess mode (a fresh process), the accelerator's observations and adds
    merge to the same values as the public calls', and the worker's exemplar file holds
    the same exemplars for both, served with the merged buckets."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = run_python(_MULTIPROCESS, env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fast_on"]  # the layout checks decide alone: no probe metric in the files

    def only(source: dict[str, Any], name: str) -> dict[str, Any]:
        return {
            key.replace(f"mp_{name}_", "mp_"): value
            for key, value in source.items()
            if f"mp_{name}_" in key
        }

    assert only(result["merged"], "fast") == only(result["merged"], "public")
    assert only(result["exemplars"], "fast") == only(result["exemplars"], "public")
    assert len(only(result["exemplars"], "fast")) >= 3
    served = [value for key, value in only(result["merged"], "fast").items() if value[1]]
    assert len(served) == len(only(result["exemplars"], "fast"))


def _public_path_serves(spans: Callable[..., InMemorySpanExporter]) -> None:
    """The histogram contract through whatever path is on: exemplars of the sampled span,
    bucket counts and sums equal to a plain prometheus-client histogram's."""
    latency = obskit.histogram("served_seconds", "Served.", ["step"])
    reference = Histogram("served_seconds", "Served.", ["step"], registry=CollectorRegistry())
    inflight = obskit.gauge("served_active", "Active.", ["method"])
    with trace.get_tracer("t").start_as_current_span("work") as span:
        ids = {
            "trace_id": format(span.get_span_context().trace_id, "032x"),
            "span_id": format(span.get_span_context().span_id, "016x"),
        }
        for value in VALUES:
            latency.labels("a").observe(value)
            reference.labels("a").observe(value, ids)
            _registry.observe_trusted(latency.labels("b"), value, ids)
            reference.labels("b").observe(value, ids)
    _registry.add_trusted(inflight.labels("GET"), 3)
    assert samples(latency) == samples(reference)
    assert samples(inflight) == [("active", {"method": "GET"}, "3.0", None)]


def test_a_changed_value_layout_turns_the_accelerator_off_and_the_public_calls_serve(
    spans: Callable[..., InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if a prometheus-client release rewrote ``MutexValue.inc`` (other private names):
    the check says so, ``obskit_fast_path_enabled{path="histogram"}`` reads 0, and
    observations still record the same buckets, sums and exemplars."""
    spans(service_name="fast-histogram", metrics_process_collectors=False)

    def inc(self: Any, amount: float) -> None:  # a "new release": the same, other names
        self.set(self.get() + amount)

    monkeypatch.setattr(MutexValue, "inc", inc)
    status.decide(True)
    by_path = {item.path: item for item in status.statuses()}
    assert not by_path["histogram"].enabled
    assert "MutexValue.inc reads ('set', 'get')" in by_path["histogram"].reason
    assert by_path["span_context"].enabled  # the others are unaffected
    gauge = {s.labels["path"]: s.value for s in openmetrics()["obskit_fast_path_enabled"].samples}
    assert gauge["histogram"] == 0.0
    _public_path_serves(spans)


def test_a_probe_that_records_differently_turns_the_accelerator_off(
    spans: Callable[..., InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the bucket bounds meant something else in a new release (the probe's
    observations land one bucket off): the probe reports it, the accelerator is off, and
    the public calls record what prometheus-client records."""
    spans(service_name="fast-histogram", metrics_process_collectors=False)
    monkeypatch.setattr(_fast_histogram, "_bisect", lambda bounds, amount: 0)
    status.decide(True)
    (histogram,) = [item for item in status.statuses() if item.path == "histogram"]
    assert not histogram.enabled
    assert histogram.reason == (
        "a probe histogram observed through the accelerator differs from Histogram.observe"
    )
    assert {s.labels["path"]: s.value for s in openmetrics()["obskit_fast_path_enabled"].samples}[
        "histogram"
    ] == 0.0
    _public_path_serves(spans)


def test_the_probe_passes_and_leaves_the_flag_alone() -> None:
    """The check's probe runs the accelerator's own code without turning it on for other
    callers: with the accelerator off, the check passes and the flag stays off."""
    status.decide(False)
    assert _fast_histogram._check() is None
    assert _fast_histogram._on is False
