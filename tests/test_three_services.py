"""Three real services and a task queue, one trace: A (Flask under gunicorn) asks B
(FastAPI under uvicorn) for a quote, B stores it in C (Django under gunicorn, on a real
PostgreSQL), and A enqueues a Celery task a real prefork worker runs. Every span and
every service's log line carries the trace id of A's request."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.celery_rig import CeleryWorker, need_celery
from tests.postgres_server import Postgres, run_sql
from tests.receivers import OtlpHttpReceiver, ReceivedSpan
from tests.servers import ROOT, Server, clean_env, trace_id_of

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP span kinds
BIND = ("--bind", "127.0.0.1:{port}")
#: (service, kind) of every span the trace must hold.
HOPS = {
    ("shop", SERVER),
    ("shop", CLIENT),
    ("shop", PRODUCER),
    ("pricing", SERVER),
    ("pricing", CLIENT),
    ("django-example", SERVER),
    ("django-example", CLIENT),
    ("celery-worker", CONSUMER),
}


def _spans_of(receiver: OtlpHttpReceiver, trace_id: str) -> list[ReceivedSpan]:
    """The trace's spans once every hop has arrived (each service exports in its own
    time), or after 40 s."""
    deadline = time.monotonic() + 40
    while True:
        spans = [s for s in receiver.spans if s.trace_id == trace_id]
        if {(s.resource["service.name"], s.kind) for s in spans} >= HOPS:
            return spans
        if time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def _one(spans: list[ReceivedSpan], service: str, kind: int) -> ReceivedSpan:
    (found,) = [s for s in spans if s.resource["service.name"] == service and s.kind == kind]
    return found


@pytest.mark.slow
def test_flask_to_fastapi_to_django_on_postgresql_and_a_celery_task_is_one_trace(
    tmp_path: Path, postgres: Postgres, redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """A's SERVER → A's CLIENT → B's SERVER → B's CLIENT → C's SERVER → C's PostgreSQL
    spans, and A's PRODUCER → the worker's CONSUMER → the task's own span: one trace id,
    each span's parent the hop before it; the log lines of A, B, C and the task carry it."""
    need_celery()
    for module in ("fastapi", "httpx", "psycopg"):
        pytest.importorskip(module)
    run_sql(postgres, "DROP DATABASE IF EXISTS three_services", "CREATE DATABASE three_services")
    common = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    django_env = {
        "DJANGO_SETTINGS_MODULE": "tests.djangoproj.settings",
        "DJANGOPROJ_PG": f"{postgres.host} {postgres.port} {postgres.user} three_services",
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        cwd=ROOT,
        env=clean_env(**django_env, OBSKIT_DISABLED="true"),
        check=True,
        timeout=120,
    )
    started: list[Server] = []
    try:
        books = Server(
            tmp_path,
            ["gunicorn", "-w", "2", *BIND, "tests.djangoproj.wsgi:application"],
            {**common, **django_env},
            ready_path="/catalog/",
        )
        started.append(books)
        pricing = Server(
            tmp_path,
            ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "tests.apps.pricing_app:app"],
            {**common, "BOOKS_URL": books.url},
            ready_path="/health",
        )
        started.append(pricing)
        with CeleryWorker(tmp_path, redis_url, http_receiver.endpoint) as worker:
            shop = Server(
                tmp_path,
                ["gunicorn", "-w", "2", *BIND, "tests.apps.caller_app:create_app()"],
                {**common, "PRICING_URL": pricing.url, "BROKER": redis_url},
                ready_path="/health",
            )
            started.append(shop)
            request = urllib.request.Request(f"{shop.url}/checkout/dune", data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=30) as reply:
                assert reply.status == 200
                trace_id = trace_id_of(dict(reply.headers))
            spans = _spans_of(http_receiver, trace_id)
            worker_lines = worker.lines()
        a_server = _one(spans, "shop", SERVER)
        a_client = _one(spans, "shop", CLIENT)
        b_server = _one(spans, "pricing", SERVER)
        b_client = _one(spans, "pricing", CLIENT)
        c_server = _one(spans, "django-example", SERVER)
        queries = [
            s for s in spans if s.resource["service.name"] == "django-example" and s.kind == CLIENT
        ]
        produced = _one(spans, "shop", PRODUCER)
        consumed = _one(spans, "celery-worker", CONSUMER)
        assert a_client.parent_span_id == a_server.span_id
        assert b_server.parent_span_id == a_client.span_id
        assert b_server.name == "POST /quote/{title}"
        assert b_client.parent_span_id == b_server.span_id
        assert c_server.parent_span_id == b_client.span_id
        assert {q.attributes["db.system.name"] for q in queries} == {"postgresql"}
        assert {q.parent_span_id for q in queries} == {c_server.span_id}
        assert produced.parent_span_id == a_server.span_id
        assert consumed.parent_span_id == produced.span_id
        task_spans = [s for s in spans if s.name == "add.compute"]
        assert [s.parent_span_id for s in task_spans] == [consumed.span_id]
        said = {
            "shop": [line for line in shop.lines() if line.get("event") == "checked out"],
            "pricing": [line for line in pricing.lines() if line.get("event") == "quoted"],
            "books": [line for line in books.lines() if line.get("event") == "book created"],
            "task": [line for line in worker_lines if line.get("event") == "obskit line"],
        }
        assert {name: [line["trace_id"] for line in lines] for name, lines in said.items()} == {
            name: [trace_id] for name in said
        }
    finally:
        for server in started:
            server.stop()
