"""Scenario 7: hostile values in span attributes and metric labels (log calls: test_logs.py).

10 MB strings, 10,000 attributes, depth-100 nesting, circular dicts, a raising
``__repr__``, bytes, NaN and non-string keys: nothing raises in production mode, the
exported spans (decoded at a real OTLP receiver) keep string values within
``attribute_value_length_limit``, label values are cut, every log line is valid JSON
within its cap, and memory stays bounded.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import obskit
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._metrics import registry as _registry
from obskit._metrics.registry import LABEL_VALUE_MAX
from tests.receivers import OtlpHttpReceiver
from tests.reliability.conftest import coverage_paused

LIMIT = 1000  # attribute_value_length_limit for these tests
HUGE = "x" * 10_000_000


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def _hostile() -> dict[str, Any]:
    deep: Any = "bottom"
    for _ in range(100):
        deep = {"d": deep}
    circular: dict[str, Any] = {"a": 1}
    circular["self"] = circular
    return {
        "huge": HUGE,
        "huge-list": [HUGE, "ok"],
        "deep": deep,
        "circular": circular,
        "bad-repr": BadRepr(),
        "bytes": b"\xff\xfe\x00raw",
        "nan": math.nan,
        "tuple-keys": {(1, 2): "v", None: 3},
    }


#: The ones OpenTelemetry's own Span.set_attribute accepts without raising (it calls
#: str() on the others itself; obskit hands out the SDK span, so it cannot guard that).
SET_ATTRIBUTE_SAFE = ("huge", "huge-list", "deep", "bytes", "nan", "tuple-keys")


def _string_values(attributes: dict[str, Any]) -> list[str]:
    values: list[str] = []
    for value in attributes.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, bytes)):
                values.append(str(item))
    return values


def test_hostile_span_attributes_reach_the_receiver_truncated(
    http_receiver: OtlpHttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """obskit.span(**attrs), span.set_attribute and @traced(attributes=...) with hostile
    values: no exception, every span exported, string values cut to the limit, at most
    128 attributes, and every log line valid JSON within the cap."""
    obskit.init(
        otlp_endpoint=http_receiver.endpoint,
        attribute_value_length_limit=LIMIT,
        log_max_line_bytes=4096,
    )
    errors_before = sum(_internal_errors.internal_errors().values())
    names = []
    for label, value in _hostile().items():
        with obskit.span(f"span.{label}", value=value, other="kept") as span:
            if label in SET_ATTRIBUTE_SAFE:
                span.set_attribute("set", value)
                span.set_attribute(7, "non-string key")  # type: ignore[arg-type]

        @obskit.traced(name=f"traced.{label}", attributes={"value": value, 7: "int key"})
        def work() -> str:
            return "done"

        assert work() == "done"
        names += [f"span.{label}", f"traced.{label}"]
    with obskit.span("span.many", **{f"k{n}": n for n in range(10_000)}):
        pass
    names.append("span.many")
    assert obskit.shutdown(timeout=10)
    spans = {span.name: span for span in http_receiver.wait_for(len(names))}
    assert sorted(spans) == sorted(names)
    for span in spans.values():
        assert len(span.attributes) <= 128
        assert all(len(text) <= LIMIT for text in _string_values(span.attributes))
    assert spans["span.huge"].attributes["value"] == "x" * LIMIT
    assert spans["span.huge"].attributes["set"] == "x" * LIMIT
    assert spans["span.bad-repr"].attributes["value"] == "<unrepresentable BadRepr>"
    assert spans["span.bad-repr"].attributes["other"] == "kept"
    for kind in ("span", "traced"):  # mappings are recorded as their text, on every SDK
        assert spans[f"{kind}.circular"].attributes["value"].startswith("{'a': 1, 'self': {...}}")
        assert spans[f"{kind}.deep"].attributes["value"].startswith("{'d': {'d': {'d':")
    assert spans["traced.huge"].attributes["7"] == "int key"
    # the raising __repr__ given to obskit.span is counted, not lost
    assert sum(_internal_errors.internal_errors().values()) - errors_before == 1
    for line in capsys.readouterr().out.splitlines():
        assert len(line.encode()) <= 4096
        json.loads(line)


def test_hostile_span_attributes_raise_in_strict_mode() -> None:
    """Strict mode surfaces the internal error a raising __repr__ causes in obskit.span."""
    obskit.init(strict=True)
    with pytest.raises(RuntimeError, match="no repr"), obskit.span("s", value=BadRepr()):
        pass


def _scrape() -> tuple[bytes, dict[str, Any]]:
    body = generate_latest(_registry.store().registry)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return body, families


def test_hostile_metric_labels_never_raise_and_are_cut(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hostile label values: no exception, one series each with text at most 1024
    characters (a raising __str__ becomes a placeholder and is counted), a valid scrape."""
    obskit.init(log_max_line_bytes=4096)
    hits = obskit.counter("hostile_hits_total", "Hits.", ["value"])
    errors_before = _internal_errors.internal_errors().get("metrics", 0)
    for value in _hostile().values():
        hits.labels(value).inc()
        hits.labels(value=value).inc()
    body, families = _scrape()
    samples = [s for s in families["hostile_hits"].samples if s.name == "hostile_hits_total"]
    values = {s.labels["value"]: s.value for s in samples}
    assert len(values) == len(_hostile())
    assert all(len(value) <= LABEL_VALUE_MAX for value in values)
    assert values["x" * LABEL_VALUE_MAX] == 2
    assert values["<unrepresentable BadRepr>"] == 2
    assert values["nan"] == 2
    assert _internal_errors.internal_errors()["metrics"] - errors_before == 2
    assert len(body) < 100_000
    for line in capsys.readouterr().out.splitlines():
        assert len(line.encode()) <= 4096
        json.loads(line)


def test_hostile_metric_label_raises_in_strict_mode() -> None:
    """Strict mode surfaces a label value whose __str__ raises."""
    obskit.init(strict=True)
    with pytest.raises(RuntimeError, match="no repr"):
        obskit.counter("strict_hits_total", "Hits.", ["value"]).labels(BadRepr())


ROUNDS = 30  # a 10 MB value costs ~0.1 s to log: the log line is cut after encoding


@pytest.mark.slow
def test_memory_stays_bounded_under_hostile_values(capfd: pytest.CaptureFixture[str]) -> None:
    """30 rounds of 10 MB values through logs, spans and 30 distinct 10 MB label values
    (cap 10): Python memory retained after the loop grows < 1 MB, the peak stays < 64 MB
    (a few copies of one value in flight, not one per round)."""
    obskit.init(metrics_max_series=10, attribute_value_length_limit=LIMIT)
    log = obskit.get_logger("hostile")
    hits = obskit.counter("memory_hits_total", "Hits.", ["value"])
    values = _hostile()

    def round_(n: int) -> None:
        log.info("hostile", value=HUGE, deep=values["deep"], circular=values["circular"])
        with obskit.span("hostile", value=HUGE, many=values["huge-list"]) as span:
            span.set_attribute("bytes", b"\xff" * 1000)
        hits.labels((n, HUGE)).inc()  # a distinct 10 MB label value per round

    round_(-1)  # warm up: caches, the metric's first series, the logger
    with coverage_paused():
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for n in range(ROUNDS):
            round_(n)
        after = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    stats = after.compare_to(before, "lineno")
    growth = sum(stat.size_diff for stat in stats)
    assert growth < 1_000_000, [str(stat) for stat in stats[:5]]
    assert peak < 64_000_000
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert len([line for line in lines if line["event"] == "hostile"]) == ROUNDS + 1
    print(f"retained growth {growth} B, peak {peak} B over {ROUNDS} rounds")
