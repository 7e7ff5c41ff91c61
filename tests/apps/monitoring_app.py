"""A Flask app that makes every metric obskit's generated rules and dashboard read, for
the monitoring tests (run under gunicorn with obskit's hooks):

- ``/post/<int:n>``: never fails; a ``@traced`` function, a SQLite query, an eager
  Celery task and an outgoing HTTP call to ``$ORIGIN`` (``/status/200``);
- ``/work/<int:n>``: answers 500 when asked (``?fail=1``): the error burst;
- ``/task/fail``: an eager Celery task that raises (a task ``error`` outcome);
- ``/slow?seconds=``: sleeps (past ``stuck_after``: a stuck span);
- ``/hostile/<int:n>``: a span attribute whose ``str()`` raises (an obskit internal
  error) and a counter over its series cap (overflow).
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.request

from celery import Celery  # type: ignore[import-untyped]
from flask import Flask, request

import obskit


class Unprintable:
    """A value whose text cannot be had: obskit records a placeholder and counts it."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this value")


def create_app() -> Flask:
    """The app factory (gunicorn calls it in each worker)."""
    obskit.init(service_name="monitoring-app")
    origin = os.environ["ORIGIN"]
    tasks = Celery("monitoring_app", broker="memory://", backend="cache+memory://")
    tasks.conf.task_always_eager = True

    @tasks.task(name="monitoring.add")
    def add(x: int, y: int) -> int:
        if x < 0:
            raise ValueError("a negative x")
        return x + y

    widgets = obskit.counter("monitoring_widgets", "Widgets seen.", ["widget"], max_series=2)

    @obskit.traced
    def load(n: int) -> int:
        with sqlite3.connect(":memory:") as database:
            (value,) = database.execute("SELECT ?", (n,)).fetchone()
        return int(value)

    app = Flask(__name__)

    @app.get("/post/<int:n>")
    def post(n: int) -> dict[str, int]:
        value = load(n)
        add.delay(n, 1)
        with urllib.request.urlopen(f"{origin}/status/200", timeout=5) as reply:
            reply.read()
        return {"post": value}

    @app.get("/work/<int:n>")
    def work(n: int) -> tuple[dict[str, int], int]:
        return {"work": n}, 500 if request.args.get("fail") else 200

    @app.get("/task/fail")
    def task_fail() -> dict[str, str]:
        add.delay(-1, 1)
        return {"task": "failed"}

    @app.get("/slow")
    def slow() -> dict[str, float]:
        seconds = min(float(request.args.get("seconds", "0.2")), 5.0)
        time.sleep(seconds)
        return {"slept": seconds}

    @app.get("/hostile/<int:n>")
    def hostile(n: int) -> dict[str, int]:
        with obskit.span("render", widget=Unprintable()):
            widgets.labels(str(n)).inc()
        return {"hostile": n}

    obskit.instrument_flask(app)
    return app
