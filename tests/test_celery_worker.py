"""Celery with a real worker (prefork, 2 children) and a real redis broker: one trace
from the request that sends a task to the spans the task makes, the task's log lines,
failures, retries, revocations and time limits, metrics merged across the children on
the worker's /metrics, and every child's spans exported (recycled children flush)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.celery_rig import CeleryWorker
from tests.receivers import BlackHole, OtlpHttpReceiver, ReceivedSpan

pytestmark = pytest.mark.slow

PRODUCER, CONSUMER, SERVER = 4, 5, 2  # OTLP span kinds
TASK = "tests.apps.celery_app."

FLASK_REQUEST = """
import json
from flask import Flask
import obskit

web = Flask("web")


@web.get("/enqueue")
def enqueue():
    return {"task": add.delay(2, 3).id}


obskit.instrument_flask(web)
response = web.test_client().get("/enqueue")
task = response.get_json()["task"]
trace = response.headers["traceresponse"].split("-")[1]
print(json.dumps({"trace": trace, "task": task, "result": add.AsyncResult(task).get(timeout=60)}))
"""


def _by_name(spans: list[ReceivedSpan], trace: str) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans if span.trace_id == trace}


def test_a_flask_request_that_sends_a_task_is_one_trace_down_to_the_tasks_own_span(
    tmp_path: Path, redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """A Flask request (in-process test client) sends a task to a prefork worker: the
    receiver gets one trace SERVER -> PRODUCER -> CONSUMER -> the task's own span, with
    the messaging conventions, and the worker's stdout lines from obskit's logger,
    structlog, stdlib logging, Celery's task logger and Celery itself carry that trace
    id."""
    with CeleryWorker(tmp_path, redis_url, http_receiver.endpoint) as worker:
        sent = json.loads(worker.send(FLASK_REQUEST, http_receiver.endpoint).splitlines()[-1])
        assert sent["result"] == 5
        trace = sent["trace"]
        spans = http_receiver.wait_for_traces({trace}, 4, timeout=30)
        named = _by_name(spans, trace)
        request = named["GET /enqueue"]
        send = named[f"send {TASK}add"]
        process = named[f"process {TASK}add"]
        compute = named["add.compute"]
        assert (request.kind, send.kind, process.kind) == (SERVER, PRODUCER, CONSUMER)
        assert send.parent_span_id == request.span_id
        assert process.parent_span_id == send.span_id
        assert compute.parent_span_id == process.span_id
        assert send.attributes["messaging.system"] == "celery"
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["messaging.destination.name"] == "celery"
        assert send.attributes["messaging.message.id"] == sent["task"]
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["messaging.message.id"] == sent["task"]
        assert process.attributes["celery.state"] == "SUCCESS"
        assert send.resource["service.name"] == "producer"
        assert process.resource["service.name"] == "celery-worker"
        assert process.resource["process.pid"] != worker.process.pid  # a pool child
    lines = [line for line in worker.lines() if line.get("trace_id") == trace]
    events = {line["event"]: line for line in lines}
    assert events["obskit line"]["logger"] == "tests.celery.obskit"
    assert events["structlog line"]["logger"] == "tests.celery.structlog"
    assert events["stdlib line 2"]["logger"] == "tests.celery.stdlib"
    assert events["task logger line 2"]["logger"] == "tests.apps.celery_app"
    assert events["obskit line"]["span_id"] == compute.span_id
    assert any(re.match(rf"Task {re.escape(TASK)}add\[.*\] succeeded", e) for e in events)
    worker.assert_no_errors()


OUTCOMES = """
import datetime, json, time
from celery.exceptions import TaskRevokedError

sent = {}


def outcome(name, result, wait=60):
    try:
        result.get(timeout=wait)
    except Exception as error:
        sent[name] = [result.id, type(error).__name__]
    else:
        sent[name] = [result.id, "ok"]


outcome("broken", broken.delay())
outcome("flaky", flaky.delay())
outcome("soft", soft_limited.delay(5))
outcome("hard", hard_limited.delay(30))
past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
outcome("expired", pid.apply_async((0,), expires=past))
running = pid.delay(60)
deadline = time.monotonic() + 30
while running.state != "STARTED" and time.monotonic() < deadline:
    time.sleep(0.05)
app.control.revoke(running.id, terminate=True)
outcome("terminated", running)
print(json.dumps(sent))
"""


def _events(receiver: OtlpHttpReceiver, span_id: str) -> dict[str, dict[str, object]]:
    """The events of span ``span_id`` (the shared receiver keeps no events: decoded here
    from the request bodies), by name, with their attributes."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    from tests.receivers import _value

    found: dict[str, dict[str, object]] = {}
    for body in receiver.bodies:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.span_id.hex() == span_id:
                        for event in span.events:
                            found[event.name] = {a.key: _value(a.value) for a in event.attributes}
    return found


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[1])
    return 0.0


def test_failed_retried_time_limited_and_revoked_tasks_are_recorded_as_such(
    tmp_path: Path, redis_url: str
) -> None:
    """A failing task (ERROR, error.type, exception event), a retried one (a RETRY run
    with a celery.retry event, its retry sent under it and run as the same trace), one
    stopped by its soft and one by its hard time limit (time_limit outcome, recorded by
    the main process for the hard one, whose process is killed), an expired one and one
    terminated while running (REVOKED, cancelled, celery.revoked event): spans at the
    receiver and outcomes on the worker's /metrics."""
    receiver = OtlpHttpReceiver(keep_bodies=True)
    try:
        with CeleryWorker(tmp_path, redis_url, receiver.endpoint) as worker:
            sent = json.loads(worker.send(OUTCOMES, timeout=180).splitlines()[-1])
            assert [outcome for _, outcome in sent.values()] == [
                "ValueError",
                "ok",
                "SoftTimeLimitExceeded",
                "TimeLimitExceeded",
                "TaskRevokedError",
                "TaskRevokedError",
            ], sent
            ids = {name: task for name, (task, _) in sent.items()}
            receiver.wait_for(8, timeout=30)
            metrics = worker.scrape()
            main = worker.process.pid
        spans = receiver.spans
        runs: dict[str, list[ReceivedSpan]] = {}
        for span in spans:
            if span.kind == CONSUMER:
                runs.setdefault(str(span.attributes["messaging.message.id"]), []).append(span)

        (broken,) = runs[ids["broken"]]
        assert (broken.status_code, broken.attributes["error.type"]) == (2, "ValueError")
        assert broken.attributes["celery.state"] == "FAILURE"
        assert "exception" in _events(receiver, broken.span_id)

        first, second = sorted(
            runs[ids["flaky"]], key=lambda s: s.attributes.get("celery.retries", 0)
        )
        assert first.attributes["celery.state"] == "RETRY"
        assert first.status_code == 0
        assert _events(receiver, first.span_id)["celery.retry"] == {
            "exception.type": "ConnectionError"
        }
        (resend,) = [s for s in spans if s.kind == PRODUCER and s.parent_span_id == first.span_id]
        assert second.parent_span_id == resend.span_id
        assert second.trace_id == first.trace_id
        assert (second.attributes["celery.retries"], second.attributes["celery.state"]) == (
            1,
            "SUCCESS",
        )

        (soft,) = runs[ids["soft"]]
        assert soft.status_code == 2
        assert soft.attributes["error.type"].endswith("SoftTimeLimitExceeded")
        assert _events(receiver, soft.span_id)["celery.time_limit"] == {
            "celery.time_limit.kind": "soft"
        }

        hard = [s for s in runs[ids["hard"]] if s.resource["process.pid"] == main]
        assert len(hard) == 1, runs[ids["hard"]]
        assert hard[0].status_code == 2
        assert hard[0].attributes["error.type"].endswith(".TimeLimitExceeded")
        assert _events(receiver, hard[0].span_id)["celery.time_limit"] == {
            "celery.time_limit.kind": "hard",
            "celery.time_limit.seconds": 1.0,
        }

        (expired,) = runs[ids["expired"]]
        assert expired.resource["process.pid"] == main
        assert expired.attributes["celery.state"] == "REVOKED"
        assert expired.attributes["obskit.cancelled"] is True
        assert expired.status_code == 0
        assert _events(receiver, expired.span_id)["celery.revoked"]["celery.revoked.expired"]

        terminated = [s for s in runs[ids["terminated"]] if s.resource["process.pid"] == main]
        assert len(terminated) == 1
        revoked = _events(receiver, terminated[0].span_id)["celery.revoked"]
        assert revoked["celery.revoked.terminated"] is True
        assert revoked["celery.revoked.signal"] == 15

        def tasks(task: str, outcome: str) -> float:
            return _sample(metrics, "obskit_tasks_total", task=TASK + task, outcome=outcome)

        assert tasks("broken", "error") == 1
        assert (tasks("flaky", "retry"), tasks("flaky", "ok")) == (1, 1)
        assert tasks("soft_limited", "time_limit") == 1
        assert tasks("hard_limited", "time_limit") == 1
        assert tasks("pid", "revoked") == 2
        hard_count = _sample(
            metrics,
            "obskit_task_duration_seconds_count",
            task=TASK + "hard_limited",
            outcome="time_limit",
        )
        assert hard_count == 1
        assert 'outcome="revoked"' not in "".join(
            line for line in metrics.splitlines() if line.startswith("obskit_task_duration")
        )  # revoked tasks are counted, not timed
        worker.assert_no_errors()
    finally:
        receiver.close()


RECYCLED = """
import json
results = [pid.delay(0.3) for _ in range(12)]
print(json.dumps([result.get(timeout=60) for result in results]))
"""


def _pids_with_files(directory: Path) -> set[int]:
    found = set()
    for path in directory.iterdir():
        match = re.search(r"_(\d+)(?:\.\d+)?\.db$|^exemplars_(\d+)\.obskit$", path.name)
        if match:
            found.add(int(match.group(1) or match.group(2)))
    return found


def test_recycled_children_export_their_spans_and_metrics_merge_across_children(
    tmp_path: Path, redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """Twelve tasks on two children recycled every two tasks (--max-tasks-per-child 2),
    spans held in the batch queue (a 60 s schedule delay): the worker's /metrics counts
    and times all twelve, merged across every child, with a trace_id exemplar, the dead
    children's files compacted; after the worker's warm shutdown every child's spans
    reached the receiver (each child flushed as it ended)."""
    with CeleryWorker(
        tmp_path,
        redis_url,
        http_receiver.endpoint,
        "--max-tasks-per-child",
        "2",
        env={"OTEL_BSP_SCHEDULE_DELAY": "60000"},
    ) as worker:
        pids = json.loads(worker.send(RECYCLED).splitlines()[-1])
        assert len(set(pids)) >= 6, pids  # 12 tasks, 2 per child
        metrics = worker.scrape()
        count = _sample(
            metrics, "obskit_task_duration_seconds_count", task=TASK + "pid", outcome="ok"
        )
        assert count == 12
        assert _sample(metrics, "obskit_tasks_total", task=TASK + "pid", outcome="ok") == 12
        exemplars = re.findall(
            r'^obskit_task_duration_seconds_bucket\{.*\} \d+\.\d+ # \{span_id="[0-9a-f]{16}",'
            r'trace_id="([0-9a-f]{32})"\}',
            metrics,
            re.M,
        )
        assert exemplars
        with_files = _pids_with_files(worker.metrics_dir)
        # Six children ran tasks and were recycled: at most the last two, whose
        # successors may not have started yet, still have files of their own.
        assert len(with_files & set(pids)) <= 2, (with_files, pids)
        assert (worker.metrics_dir / "histogram_merged.db").exists()
        assert worker.stop() == 0
        worker.assert_no_errors()
    spans = http_receiver.wait_for(12, timeout=30)
    processed = [span for span in spans if span.name == f"process {TASK}pid"]
    assert len(processed) == 12
    assert {span.resource["process.pid"] for span in processed} == set(pids)
    assert set(exemplars) <= {span.trace_id for span in processed}


def test_a_prefork_worker_without_a_metrics_directory_says_its_metrics_show_no_task(
    tmp_path: Path, redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """A prefork worker started without PROMETHEUS_MULTIPROC_DIR logs one warning naming
    the variable: its pool children's metrics would never reach its /metrics."""
    with CeleryWorker(
        tmp_path, redis_url, http_receiver.endpoint, env={"PROMETHEUS_MULTIPROC_DIR": ""}
    ) as worker:
        assert worker.send("print(pid.delay().get(timeout=60))").strip().isdigit()
        warnings = [
            line
            for line in worker.lines()
            if line["level"] == "warning" and "PROMETHEUS_MULTIPROC_DIR" in line["event"]
        ]
        assert len(warnings) == 1, worker.lines()
        assert warnings[0]["logger"] == "obskit"


def test_a_worker_whose_collector_never_answers_stops_within_its_shutdown_deadline(
    tmp_path: Path, redis_url: str, black_hole: BlackHole
) -> None:
    """Spans exported to a collector that accepts and never answers, shutdown_timeout 1 s:
    children recycled after each task and the worker's warm shutdown each give up flushing
    at the deadline, so the worker still exits by itself, with status 0 (30 s allowed)."""
    with CeleryWorker(
        tmp_path,
        redis_url,
        black_hole.endpoint,
        "--max-tasks-per-child",
        "1",
        env={"OBSKIT_SHUTDOWN_TIMEOUT": "1", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    ) as worker:
        pids = json.loads(worker.send(RECYCLED.replace("12", "4")).splitlines()[-1])
        assert len(set(pids)) == 4  # each child ran one task, then flushed and left
        assert worker.stop(timeout=30) == 0
        worker.assert_no_errors()
