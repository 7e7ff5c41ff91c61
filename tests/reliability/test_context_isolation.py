"""Scenario 11: context isolation under load. No log line or span ever carries another
request's (or task's) ids, and a request that binds nothing logs no bound field."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import obskit
from tests.receivers import OtlpHttpReceiver
from tests.reliability.rig import flask_gunicorn

REQUESTS = 10_000
CONNECTIONS = 64
DEADLINE = 90.0  # seconds for the whole load: a stuck server fails the test here


def _load(port: int) -> tuple[dict[int, str], collections.Counter[int], float]:
    """REQUESTS GETs of /post/N over CONNECTIONS keep-alive connections; even N bind
    request_id=req-N. Returns each request's trace id, the status counts, the seconds."""
    trace_ids: dict[int, str] = {}
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for n in range(index, REQUESTS, CONNECTIONS):
            if time.monotonic() > deadline:
                break
            path = f"/post/{n}?request_id=req-{n}" if n % 2 == 0 else f"/post/{n}"
            try:
                connection.request("GET", path)
                reply = connection.getresponse()
                reply.read()
                status, header = reply.status, reply.getheader("traceresponse") or ""
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status, header = 0, ""
            with lock:
                statuses[status] += 1
                if header:
                    trace_ids[n] = header.split("-")[1]
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return trace_ids, statuses, time.monotonic() - started


def _request_of(line: dict[str, Any]) -> int | None:
    """Which request wrote a log line: its post_id, or the N in its access-log path."""
    if "post_id" in line:
        return int(line["post_id"])
    path = line.get("url.path", "")
    if path.startswith("/post/"):
        return int(path.split("/")[2])
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gthread_under_load_never_mixes_request_ids(
    tmp_path: Path, http_receiver: OtlpHttpReceiver
) -> None:
    """10,000 requests over 64 connections to gunicorn gthread (2 workers x 8 threads):
    every log line and every received span carries only its own request's trace id and
    request_id, and a request that binds nothing has no request_id on any line."""
    server = flask_gunicorn(
        tmp_path / "gthread",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "30000",
            "OBSKIT_HTTP_QUERY_ALLOWLIST": "request_id",  # each request's own value, checked
        },
        worker_class="gthread",
        threads=8,
        measure_coverage=False,
    )
    try:
        trace_ids, statuses, seconds = _load(server.port)
    finally:
        server.stop()  # flushes the remaining spans
    assert statuses == {200: REQUESTS}
    lines = server.lines()
    wrong_lines = []
    per_request: collections.Counter[int] = collections.Counter()
    for line in lines:
        n = _request_of(line)
        if n is None:
            continue
        per_request[n] += 1
        expected_id = f"req-{n}" if n % 2 == 0 else None
        if line.get("trace_id") != trace_ids[n] or line.get("request_id") != expected_id:
            wrong_lines.append(line)
    spans = http_receiver.spans
    by_trace: dict[str, list[Any]] = collections.defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    owner = {trace_id: n for n, trace_id in trace_ids.items()}
    wrong_spans = []
    for trace_id, members in by_trace.items():
        n = owner.get(trace_id)
        servers = [s for s in members if s.kind == 2]  # SPAN_KIND_SERVER
        if n is None and all(s.attributes.get("url.path") == "/" for s in servers):
            continue  # the readiness probe's GET /
        if n is None or len(servers) != 1 or servers[0].attributes["url.path"] != f"/post/{n}":
            wrong_spans.extend(members)
            continue
        query = servers[0].attributes.get("url.query", "")
        if (f"request_id=req-{n}" if n % 2 == 0 else "") != query:
            wrong_spans.extend(members)
        children = [s for s in members if s.kind != 2]
        if any(s.parent_span_id != servers[0].span_id for s in children):
            wrong_spans.extend(children)
    print(
        f"scenario 11: {REQUESTS} requests in {seconds:.1f} s ({REQUESTS / seconds:.0f} req/s), "
        f"{len(lines)} log lines, {len(spans)} spans, {len(wrong_lines)} wrong lines, "
        f"{len(wrong_spans)} wrong spans"
    )
    assert wrong_lines == []
    assert wrong_spans == []
    assert set(per_request) == set(range(REQUESTS))  # every request's lines were checked
    assert min(per_request.values()) == 3  # access line, "showing post", "loading post"
    assert len(spans) >= REQUESTS  # most spans arrived (and each was checked)


def _ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@pytest.mark.parametrize("helper", ["wrap", "ThreadPoolExecutor", "none"])
def test_run_in_executor_from_1000_tasks_never_shows_another_tasks_ids(
    helper: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 interleaved asyncio tasks, each in its own span with its own request_id,
    log from loop.run_in_executor work: with obskit.context.wrap or
    obskit.context.ThreadPoolExecutor each line carries exactly its task's ids; with
    neither, a line may lack them but never carries another task's."""
    obskit.init()
    capsys.readouterr()
    tracer = trace.get_tracer("tasks")
    log = obskit.get_logger("tasks")
    expected: dict[int, tuple[str, str]] = {}

    def work(n: int, step: int) -> None:
        log.info("in executor", writer=n, step=step)
        if helper != "none":  # (a plain pool thread keeps what it binds: Python's rule)
            obskit.bind(leaked=n)  # with a helper, it must stay in this one call

    async def task(n: int, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor) -> None:
        with tracer.start_as_current_span(f"task-{n}") as span:
            obskit.bind(request_id=f"task-{n}")
            expected[n] = _ids(span)
            for step in range(2):
                function = obskit.context.wrap(work) if helper == "wrap" else work
                await loop.run_in_executor(pool, function, n, step)
                log.info("in task", writer=n, step=step)
                await asyncio.sleep(0)

    async def main() -> None:
        kind = obskit.context.ThreadPoolExecutor if helper == "ThreadPoolExecutor" else None
        with (kind or ThreadPoolExecutor)(max_workers=8) as pool:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(task(n, loop, pool) for n in range(1000)))

    asyncio.run(main())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 1000 * 2 * 2
    foreign = []
    carried = 0
    for line in lines:
        n = line["writer"]
        ids = (line.get("trace_id"), line.get("span_id"))
        own = line.get("request_id") == f"task-{n}" and ids == expected[n]
        missing = "request_id" not in line and "trace_id" not in line
        leaked = line.get("leaked", n) != n
        if leaked or not (own or (helper == "none" and missing)):
            foreign.append(line)
        carried += own
    assert foreign == []
    if helper != "none":
        assert carried == len(lines)
    else:
        in_task = sum(1 for line in lines if line["event"] == "in task")
        assert carried == in_task  # only the task's own lines have the ids
