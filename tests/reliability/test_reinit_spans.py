"""Spans across init()/shutdown(): every sampled span started is exported by the pipeline
it started in or counted as dropped with a reason; none vanishes uncounted."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from opentelemetry import trace

import obskit
from tests.conftest import openmetrics
from tests.receivers import OtlpHttpReceiver

WORKERS = 32
REINITS = 20
#: Rounds (a block and a call each: two spans) under each pipeline, summed over workers.
QUOTA = 100
#: The longest any thread waits for another (a hang fails the test, never stalls it).
PATIENCE = 30.0
#: Why a span may be dropped (anything else, or no reason at all, fails the test).
REASONS = {"queue_full", "export_failed", "shutdown", "pipeline_closed"}


def _sampled(span: Any) -> int:
    return int(span.is_recording() and span.get_span_context().trace_flags.sampled)


def _span_counts() -> tuple[float, dict[str, float]]:
    """obskit_spans_exported_total and obskit_dropped_total{signal="traces"} by reason,
    read from obskit's registry as a scrape would."""
    families = openmetrics()
    exported = sum(
        s.value for s in families["obskit_spans_exported"].samples if s.name.endswith("_total")
    )
    dropped: dict[str, float] = {}
    family = families.get("obskit_dropped")
    for sample in family.samples if family is not None else ():
        if sample.name.endswith("_total") and sample.labels["signal"] == "traces":
            dropped[sample.labels["reason"]] = sample.value
    return exported, dropped


@obskit.traced
def _step(block: Any) -> int:
    """A traced call that stays open for a moment, so re-inits land inside spans; 1 if it
    started a sampled span (between shutdown() and init() it runs untraced: the current
    span is then still ``block``, counted already)."""
    time.sleep(0.001)
    current = trace.get_current_span()
    return 0 if current is block else _sampled(current)


@pytest.mark.parametrize("fast_paths", ["1", "0"], ids=["fast_paths_on", "fast_paths_off"])
def test_every_sampled_span_across_reinit_is_exported_or_counted(
    fast_paths: str, monkeypatch: pytest.MonkeyPatch, http_receiver: OtlpHttpReceiver
) -> None:
    """With 32 threads making @traced calls and obskit.span() blocks while another thread
    re-initialises obskit 20 times (every fourth time through shutdown()), the sampled spans
    started equal the spans exported (each received once) plus those counted as dropped."""
    monkeypatch.setenv("OBSKIT_FAST_PATHS", fast_paths)
    # A queue that cannot fill and frequent exports: only the re-inits can lose spans.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "65536")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

    def init(version: int) -> None:
        obskit.init(
            service_name="reinit",
            service_version=str(version),
            otlp_endpoint=http_receiver.endpoint,
            log_stdlib=False,
        )

    init(0)
    exported_before, dropped_before = _span_counts()
    started = 0
    rounds = 0  # begun under the current pipeline
    turn = threading.Condition()
    done = threading.Event()
    failures: list[BaseException] = []

    def work() -> None:
        nonlocal started, rounds
        mine = 0

        def my_turn() -> bool:
            return rounds < QUOTA or done.is_set()

        try:
            for _ in range(QUOTA * (REINITS + 1)):
                with turn:  # the quota reached: wait for the next pipeline
                    if not turn.wait_for(my_turn, PATIENCE):
                        break
                    if done.is_set():
                        break
                    rounds += 1
                    if rounds == QUOTA:
                        turn.notify_all()  # the re-init thread's turn
                with obskit.span("reinit.block") as block:
                    mine += _sampled(block)
                    mine += _step(block)
        except BaseException as error:  # reported below: a worker must never fail
            failures.append(error)
        with turn:
            started += mine

    def next_pipeline(version: int) -> None:
        nonlocal rounds
        with turn:  # re-init while the last rounds of the quota are still in their spans
            assert turn.wait_for(lambda: rounds >= QUOTA, PATIENCE)
        if version % 4 == 0:
            obskit.shutdown(timeout=10)
        init(version)
        with turn:
            rounds = 0
            turn.notify_all()

    workers = [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        for version in range(1, REINITS + 1):
            next_pipeline(version)
        with turn:
            assert turn.wait_for(lambda: rounds >= QUOTA, PATIENCE)
    finally:
        with turn:
            done.set()
            turn.notify_all()
        for worker in workers:
            worker.join(timeout=PATIENCE)
    assert not [worker for worker in workers if worker.is_alive()]
    assert failures == []
    assert obskit.shutdown(timeout=10)

    exported_after, dropped_after = _span_counts()
    exported = exported_after - exported_before
    dropped = {
        reason: count - dropped_before.get(reason, 0)
        for reason, count in dropped_after.items()
        if count != dropped_before.get(reason, 0)
    }
    assert set(dropped) <= REASONS
    # Every span sampled (the default sampler) but those made between shutdown() and init().
    assert 2 * QUOTA * (REINITS + 1) * 0.9 < started <= 2 * QUOTA * (REINITS + 1)
    assert started == exported + sum(dropped.values()), (started, exported, dropped)
    received = http_receiver.wait_for(int(exported), timeout=10)
    assert len(received) == exported
    assert len({span.span_id for span in received}) == len(received)
    # Each of the 21 pipelines (its own service.version) exported spans.
    assert len({span.resource["service.version"] for span in received}) == REINITS + 1


def test_a_span_ending_after_its_pipeline_shut_down_is_counted_not_lost(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """A span open across a re-init ends after its pipeline shut down: it is counted in
    obskit_dropped_total{reason="pipeline_closed"}; spans that ended before the re-init are
    exported by the pipeline they started in, later ones by the new pipeline."""
    obskit.init(service_name="old", otlp_endpoint=http_receiver.endpoint, log_stdlib=False)
    _, dropped_before = _span_counts()
    with obskit.span("before"):
        pass
    with obskit.span("across") as across:
        assert across.is_recording()
        obskit.init(service_name="new", otlp_endpoint=http_receiver.endpoint, log_stdlib=False)
    with obskit.span("after"):
        pass
    assert obskit.shutdown(timeout=10)
    _, dropped_after = _span_counts()
    closed = dropped_after.get("pipeline_closed", 0) - dropped_before.get("pipeline_closed", 0)
    assert closed == 1
    received = {span.name: span.resource["service.name"] for span in http_receiver.wait_for(2)}
    assert received == {"before": "old", "after": "new"}


def test_a_console_span_ending_after_shutdown_is_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the console exporter (spans written as they end), a @traced call still running
    when shutdown() returns is counted as pipeline_closed when it ends, and not written."""
    obskit.init(service_name="console", traces_exporter="console", log_stdlib=False)
    _, dropped_before = _span_counts()

    @obskit.traced(name="outlives.its.pipeline")
    def outlives() -> None:
        assert obskit.shutdown(timeout=10)

    outlives()
    _, dropped_after = _span_counts()
    closed = dropped_after.get("pipeline_closed", 0) - dropped_before.get("pipeline_closed", 0)
    assert closed == 1
    assert "outlives.its.pipeline" not in capsys.readouterr().err
