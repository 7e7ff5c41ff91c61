"""The generated rules and dashboard against a real Prometheus scraping real obskit
processes: an app under gunicorn with obskit's hooks (every family of metrics, obskit's
health counters) and a single-process worker (the accelerators' gauge).

The rules are generated with ``--window-scale 1/60`` (the test-only factor documented on
the monitoring page): the page alert's 1 h and 5 m windows become 1 minute and 5 seconds,
so an error burst pages within seconds and the module runs in about a minute.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from obskit import cli
from obskit._monitoring import dashboard, slo_spec
from tests.http_origin import Origin
from tests.prometheus_server import Prometheus, free_port, prometheus_binary
from tests.servers import ROOT, Server, clean_env

SPEC = """\
service: monitoring-app
slos:
  - name: work
    route: /work/<int:n>
    availability: 99
  - name: post
    route: /post/<int:n>
    availability: 99
"""
#: What the dashboard's Grafana variables become in the queries sent to Prometheus.
VARIABLES = {"$__rate_interval": "10s", "$job": ".*", "$slo": ".*"}
PAGE = {"alertname": "ObskitSLOBurnRate", "alertstate": "firing", "severity": "page"}


@dataclass
class Stack:
    """The running processes, the load and the error burst switch."""

    prometheus: Prometheus
    app: Server
    spec: Path
    burst: threading.Event = field(default_factory=threading.Event)
    paged: dict[str, str] | None = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.prometheus.api("query", query=expr)["result"]
        return result

    def page(self) -> dict[str, str]:
        """Turn the error burst on (once) and wait, bounded, for the page alert of the
        failing route; its labels."""
        if self.paged is None:
            wait_for(self, 'obskit:slo_error_ratio:rate1h{slo="work-availability"}', 60)
            self.burst.set()
            found = wait_for(self, _alerts({**PAGE, "slo": "work-availability"}), 60)
            self.paged = found[0]["metric"]
        return self.paged


def _alerts(labels: dict[str, str]) -> str:
    return "ALERTS{" + ", ".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def wait_for(stack: Stack, expr: str, seconds: float) -> list[dict[str, Any]]:
    """Poll ``expr`` until it has a result (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        result = stack.query(expr)
        if result or time.monotonic() > deadline:
            assert result, f"no result for {expr} in {seconds} s"
            return result
        time.sleep(0.5)


def _load(url: str, stop: threading.Event, burst: threading.Event) -> None:
    """Requests to every route, ~10 rounds a second, until ``stop``; /work fails in a burst."""
    for n in itertools.count():
        if stop.is_set() or n > 100_000:
            return
        paths = [f"/post/{n}", f"/work/{n}?fail=1" if burst.is_set() else f"/work/{n}"]
        if n % 10 == 0:
            paths += [f"/hostile/{n // 10 % 10}", "/task/fail"]
        if n % 30 == 0:
            paths.append("/slow?seconds=0.5")
        for path in paths:
            with (
                contextlib.suppress(urllib.error.HTTPError, OSError),
                urllib.request.urlopen(url + path, timeout=5) as reply,
            ):
                reply.read()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_binary()  # skip (fail under CI=true) before starting anything
    work = tmp_path_factory.mktemp("monitoring")
    spec = work / "slo.yaml"
    spec.write_text(SPEC)
    rules = work / "rules.yaml"
    assert (
        cli.main(
            ["monitoring", "rules", "--slo", str(spec), "--window-scale", "1/60", "-o", str(rules)]
        )
        == 0
    )
    origin = Origin()
    closed = f"http://127.0.0.1:{free_port()}"  # no collector: export errors, dropped spans
    app = worker = prometheus = None
    stop = threading.Event()
    load: threading.Thread | None = None
    try:
        app = Server(
            work,
            [
                "gunicorn",
                "-c",
                "examples/gunicorn.conf.py",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--bind",
                "127.0.0.1:{port}",
                "tests.apps.monitoring_app:create_app()",
            ],
            {
                "PROMETHEUS_MULTIPROC_DIR": str(work / "multiproc"),
                "ORIGIN": origin.url,
                "OBSKIT_STUCK_AFTER": "0.3",
                "OBSKIT_OTLP_ENDPOINT": closed,
                "OBSKIT_OTLP_TIMEOUT": "1",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            },
            ready_path="/work/0",
        )
        worker_port = free_port()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/apps/traced_worker.py"), closed, "240"],
            env=clean_env(OBSKIT_METRICS_PORT=str(worker_port), OBSKIT_METRICS_ADDR="127.0.0.1"),
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        prometheus = Prometheus(
            work,
            [f"127.0.0.1:{app.metrics_port}", f"127.0.0.1:{worker_port}"],
            rule_files=[rules],
        )
        running = Stack(prometheus, app, spec)
        load = threading.Thread(target=_load, args=(app.url, stop, running.burst), daemon=True)
        load.start()
        yield running
    finally:
        stop.set()
        if load is not None:
            load.join(timeout=15)
        if prometheus is not None:
            prometheus.close()
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if app is not None:
            app.stop()
        origin.close()


@pytest.mark.slow
def test_an_error_burst_pages_for_its_route_and_not_for_a_route_without_errors(
    stack: Stack,
) -> None:
    """Prometheus loads the generated rules; when one route starts failing, the page alert
    fires for that route's SLO, and no alert ever fires for the route that never fails."""
    labels = stack.page()
    assert labels["http_route"] == "/work/<int:n>"
    assert labels["job"] == "obskit"
    assert (
        stack.query(_alerts({"alertname": "ObskitSLOBurnRate", "slo": "post-availability"})) == []
    )
    never = 'max_over_time(ALERTS{slo="post-availability"}[5m])'
    assert stack.query(never) == []
    ratio = stack.query('obskit:slo_error_ratio:rate1h{slo="post-availability"}')
    assert [float(sample["value"][1]) for sample in ratio] == [0.0]


def _filled(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _has_value(prometheus: Prometheus, expr: str) -> bool:
    now = time.time()
    data = prometheus.api("query_range", query=expr, start=now - 180, end=now, step=2)
    return any(
        not math.isnan(float(value)) for series in data["result"] for _, value in series["values"]
    )


@pytest.mark.slow
def test_every_dashboard_query_returns_data_from_the_live_services(stack: Stack) -> None:
    """Each PromQL expression of the generated dashboard (its variables filled in as
    Grafana does) has values over the last minutes; the variables list the job and the
    SLOs; the latency panels' series carry trace-id exemplars."""
    stack.page()  # the SLO panels, the firing-alerts one included, have something to show
    model = slo_spec.build(slo_spec.read(stack.spec), "test", {})
    expressions = [_filled(expr) for expr in dashboard.expressions(model)]
    assert len(expressions) >= 30
    deadline = time.monotonic() + 60
    missing = expressions
    while missing and time.monotonic() < deadline:
        missing = [expr for expr in missing if not _has_value(stack.prometheus, expr)]
        if missing:
            time.sleep(2)
    assert missing == []
    slos = stack.prometheus.api("label/slo/values", **{"match[]": "obskit:slo_objective"})
    assert sorted(slos) == ["post-availability", "work-availability"]
    (variable,) = [
        v for v in dashboard.dashboard(model)["templating"]["list"] if v["name"] == "job"
    ]
    selector = variable["query"].removeprefix("label_values(").removesuffix(", job)")
    assert stack.prometheus.api("label/job/values", **{"match[]": selector}) == ["obskit"]
    now = time.time()
    exemplars = stack.prometheus.api(
        "query_exemplars",
        query=_filled(
            next(
                expr
                for expr in dashboard.expressions(model)
                if "http_route, http_request_method, le" in expr
            )
        ),
        start=now - 180,
        end=now,
    )
    trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert trace_ids
    assert all(len(trace_id) == 32 for trace_id in trace_ids)
