"""gunicorn with several workers (--preload): one /metrics for all (the master's metrics
port), exemplars across workers, worker recycling, graceful flush on SIGTERM, fork
safety."""

from __future__ import annotations

import glob
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.prometheus_server import Prometheus, free_port, prometheus_binary
from tests.receivers import OtlpHttpReceiver
from tests.servers import ROOT, Server, run_python

DURATION = "http_server_request_duration_seconds"


@pytest.fixture
def gunicorn(tmp_path: Path, http_receiver: OtlpHttpReceiver) -> Iterator[Callable[..., Server]]:
    """gunicorn -c examples/gunicorn.conf.py (obskit's hooks) serving the example app,
    returned once its /metrics port (the master's server process) answers too."""
    started: list[Server] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> Server:
        multiproc = tmp_path / f"multiproc-{len(started)}"
        server = Server(
            tmp_path,
            [
                "gunicorn",
                "-c",
                "examples/gunicorn.conf.py",
                "--bind",
                "127.0.0.1:{port}",
                *extra,
                "examples.flask_app:create_app()",
            ],
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                **(env or {}),
            },
        )
        server.multiproc = multiproc  # type: ignore[attr-defined]
        started.append(server)
        server.scrape()  # the server process may start listening just after gunicorn
        return server

    yield start
    for server in started:
        server.stop()


def _scrape(server: Server) -> tuple[dict[str, Any], float]:
    """The pod's /metrics, on the port the master's server process serves: (families,
    seconds the scrape took)."""
    request = urllib.request.Request(
        server.metrics_url, headers={"Accept": "application/openmetrics-text"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    elapsed = time.perf_counter() - started
    return {family.name: family for family in text_string_to_metric_families(text)}, elapsed


def _request_count(families: dict[str, Any], route: str = "/post/<int:post_id>") -> float:
    return sum(
        sample.value
        for sample in families[DURATION].samples
        if sample.name == f"{DURATION}_count" and sample.labels["http_route"] == route
    )


def _hammer(server: Server, count: int, threads: int = 8, retry_drops: bool = False) -> int:
    """``count`` GETs; returns how many were dropped unanswered and sent again.

    ``retry_drops``: a sync worker that reaches ``--max-requests`` can drop a connection
    it has not read yet, without a response (gunicorn issues #2567 and #2881), once in a
    few thousand requests here: a load balancer retries such a GET; so does this test.
    """
    dropped = 0

    def call(n: int) -> None:
        nonlocal dropped
        try:
            with urllib.request.urlopen(f"{server.url}/post/{n}", timeout=10) as reply:
                assert reply.status == 200
        except (http.client.RemoteDisconnected, ConnectionResetError):
            if not retry_drops:
                raise
            dropped += 1
            with urllib.request.urlopen(f"{server.url}/post/{n}", timeout=10) as reply:
                assert reply.status == 200

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(call, range(count)))
    return dropped


@pytest.mark.slow
def test_one_metrics_endpoint_counts_every_workers_requests_with_exemplars(
    gunicorn: Callable[..., Server], http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """4 sync workers, --preload, 2,000 requests: the pod's /metrics counts 2,000;
    its exemplars are trace ids the receiver got; each worker exports with its own
    process.pid; obskit_spans_exported_total sums every worker's exports; a real
    Prometheus stores those exemplars."""
    server = gunicorn("--workers", "4", "--preload")
    _hammer(server, 2000)
    families, _ = _scrape(server)
    assert _request_count(families) == 2000
    exemplar_ids = {
        sample.exemplar.labels["trace_id"]
        for sample in families[DURATION].samples
        if sample.exemplar is not None
    }
    assert exemplar_ids
    spans = http_receiver.wait_for(4000, timeout=30)
    received = {span.trace_id for span in spans}
    assert exemplar_ids <= received
    pids = {span.resource["process.pid"] for span in spans}
    assert len(pids) == 4
    assert server.process.pid not in pids
    # obskit's own counters are summed over the workers, not the answering worker's.
    exported = 0.0
    deadline = time.monotonic() + 20
    while exported != len(http_receiver.spans) and time.monotonic() < deadline:
        time.sleep(0.3)
        exported = sum(
            sample.value
            for sample in _scrape(server)[0]["obskit_spans_exported"].samples
            if sample.name == "obskit_spans_exported_total"
        )
    assert exported == len(http_receiver.spans)
    # A real Prometheus scraping the same endpoint keeps the cross-worker exemplars.
    prometheus_binary()
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{server.metrics_port}"])
    try:
        _hammer(server, 200)
        now = time.time()
        stored = prometheus.wait_for(
            "query_exemplars", query=f"{DURATION}_bucket", start=now - 120, end=now + 60
        )
        stored_ids = {e["labels"]["trace_id"] for s in stored for e in s["exemplars"]}
        assert stored_ids
        deadline = time.monotonic() + 20
        while not stored_ids <= received and time.monotonic() < deadline:
            time.sleep(0.5)
            received = {span.trace_id for span in http_receiver.spans}
        assert stored_ids <= received
    finally:
        prometheus.close()


@pytest.mark.slow
def test_worker_recycling_keeps_counters_monotonic_and_files_bounded(
    gunicorn: Callable[..., Server],
) -> None:
    """max_requests=50 over 5,000 requests: totals never decrease between scrapes, no
    file of a dead worker is left, and the files stay bounded: four per live process
    plus the two merged ones."""
    server = gunicorn("--workers", "2", "--max-requests", "50", "--preload")
    totals: list[float] = []
    dropped = 0
    for _ in range(10):
        dropped += _hammer(server, 500, retry_drops=True)
        families, _ = _scrape(server)
        totals.append(_request_count(families))
    assert dropped <= 5  # gunicorn's, rare: every other request was answered
    assert totals == sorted(totals)
    assert totals[-1] == 5000  # a dropped request was never served (nor counted)
    from obskit._metrics.multiprocess import LOCK_NAME

    files = [
        name
        for name in os.listdir(server.multiproc)  # type: ignore[attr-defined]
        if name != LOCK_NAME  # the directory lock (one file, kept)
    ]
    live = {name.rsplit("_", 1)[-1].split(".")[0] for name in files} - {"merged"}
    assert len(live) <= 3  # 2 workers, plus one being replaced at this instant
    # per live process: counter, histogram, gauge_livesum (requests in flight) and
    # gauge_livemin (fast paths); merged: counter and histogram
    assert len(files) <= 4 * len(live) + 2
    assert any(name.endswith("_merged.db") for name in files)


@pytest.mark.slow
def test_sigterm_to_gunicorn_flushes_every_buffered_span(
    gunicorn: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """500 spans buffered behind a 60 s batch delay all reach the receiver on SIGTERM."""
    server = gunicorn(
        "--workers",
        "1",
        env={
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "10000",
        },
    )
    _hammer(server, 250, threads=4)  # 2 spans each: the request and load_post
    time.sleep(0.5)
    already = len(http_receiver.spans)
    server.stop()
    spans = http_receiver.wait_for(500 + already, timeout=20)
    names = [span.name for span in spans]
    assert names.count("GET /post/<int:post_id>") == 250
    assert names.count("examples.flask_app.load_post") == 250


@pytest.mark.slow
def test_sigterm_with_the_collector_down_exits_within_the_bound(
    gunicorn: Callable[..., Server],
) -> None:
    """With nothing listening for spans, a graceful stop still ends within the bound."""
    dead = f"http://127.0.0.1:{free_port()}"
    server = gunicorn(
        "--workers",
        "1",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": dead,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "OBSKIT_SHUTDOWN_TIMEOUT": "2",
        },
    )
    _hammer(server, 50, threads=4)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    assert time.monotonic() - started < 2 + 3  # the bound plus gunicorn's own stop


@pytest.mark.slow
def test_sigterm_to_a_plain_script_flushes_then_terminates(
    http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """python app.py killed by SIGTERM: buffered spans are flushed, then the process ends
    as SIGTERM's default action would (the previous handler is chained)."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            import obskit
            from opentelemetry import trace
            obskit.init(service_name="plain", otlp_endpoint="{http_receiver.endpoint}")
            for n in range(500):
                with trace.get_tracer("t").start_as_current_span(f"span-{{n}}"):
                    pass
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env["OBSKIT_METRICS_PORT"] = "0"  # no /metrics server on 0.0.0.0:9464
    env["OTEL_BSP_SCHEDULE_DELAY"] = "60000"
    env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "10000"
    env["OTEL_BSP_MAX_QUEUE_SIZE"] = "10000"
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        assert "ready" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == -signal.SIGTERM
    finally:  # a failure leaks neither the process nor its pipe into later tests
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert len(http_receiver.wait_for(500, timeout=10)) == 500


FORK_SCRIPT = """
import os, sys, threading, time
import obskit
from obskit._logs import pipeline as _pipeline
from obskit._metrics import registry as _registry
from obskit._lifecycle import runtime as _runtime
from obskit._lifecycle import self_stats as _self_stats
from opentelemetry import trace

obskit.init(service_name="forky", traces_exporter="none")
obskit.histogram("work_seconds", "x").observe(0.1)
log = obskit.get_logger("forky")

@obskit.traced
def work():
    log.info("child working")
    return 1

locks = [
    _runtime._lock,
    _self_stats._lock,
    _pipeline.pipeline().writer._lock,
    _registry.store()._lock,
]
failures = 0
for n in range(50):
    lock = locks[n % len(locks)]
    held = threading.Event()
    release = threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        work()
        obskit.counter("child_total", "x").inc()
        with obskit.span("in-child"):
            log.info("span in child")
        os._exit(0)
    release.set()
    holder.join()
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            failures += status != 0
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            failures += 1
            print("HUNG", n, file=sys.stderr)
            break
        time.sleep(0.01)
print("failures", failures, file=sys.stderr)
sys.exit(1 if failures else 0)
"""


@pytest.mark.slow
def test_fork_while_obskit_locks_are_held_never_hangs() -> None:
    """50 forks, each while another thread holds one of obskit's locks: every child logs,
    traces and counts, then exits within a 10 s watchdog."""
    result = run_python(FORK_SCRIPT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "failures 0" in result.stderr
    assert result.stdout.count("child working") == 50


def test_compaction_merges_dead_workers_files(tmp_path: Path) -> None:
    """compact() folds a dead pid's counters/histograms into *_merged.db, sums them with
    earlier merges, drops its live gauges and exemplars."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        import obskit
        from obskit._metrics.multiprocess import compact
        counter = obskit.counter("jobs_total", "Jobs.", ["queue"])
        gauge = obskit.gauge("busy", "Busy.")
        for pid_round in range(3):
            pid = os.fork()
            if pid == 0:
                counter.labels("a").inc(5)
                gauge.inc()
                os._exit(0)
            os.waitpid(pid, 0)
            compact({str(tmp_path)!r}, pid)
        from prometheus_client import generate_latest
        from obskit._metrics.registry import store
        print(generate_latest(store().exposition()).decode())
        print(sorted(os.listdir({str(tmp_path)!r})), os.getpid())
        """
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert 'jobs_total{queue="a"} 15.0' in result.stdout
    assert "busy 0.0" in result.stdout  # only the live parent's gauge is left
    parent = result.stdout.split()[-1]
    assert f"['counter_merged.db', 'gauge_livesum_{parent}.db', 'obskit.lock']" in result.stdout
    assert not glob.glob(str(tmp_path / "*.obskit"))


def test_merged_histograms_keep_each_series_together_in_openmetrics(tmp_path: Path) -> None:
    """In multiprocess mode, /metrics in OpenMetrics gives each histogram series' samples
    (``_sum``, buckets, ``_count``) together, as OpenMetrics parsers require, exemplars
    included (prometheus-client's merge before 0.24 gives every ``_sum`` first)."""
    script = f"""
        import os, sys
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        import obskit
        obskit.init(service_name="grouping", metrics_process_collectors=False, log_level="error")
        histogram = obskit.histogram("job_seconds", "Jobs.", ["queue"])
        for queue in ("a", "b", "c"):
            with obskit.span("job"):
                histogram.labels(queue).observe(0.1)
        environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics",
                   "HTTP_ACCEPT": "application/openmetrics-text"}}
        body = obskit.metrics_wsgi_app()(environ, lambda status, headers: None)
        sys.stdout.write(b"".join(body).decode())
        """
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    series: list[str] = []  # the label set (without le) of each job_seconds sample, in order
    for line in result.stdout.splitlines():
        if line.startswith("job_seconds_"):
            labels = line.split("{", 1)[1].split("}", 1)[0].split(",")
            key = ",".join(label for label in labels if not label.startswith("le="))
            if not series or series[-1] != key:
                series.append(key)
    assert sorted(series) == ['queue="a"', 'queue="b"', 'queue="c"']  # each once, unsplit
    (family,) = [
        f for f in text_string_to_metric_families(result.stdout) if f.name == "job_seconds"
    ]
    assert sum(sample.exemplar is not None for sample in family.samples) == 3


#: Compaction of 30 dead workers (20 counter and 20 histogram series each) while another
#: thread scrapes the directory in a loop, with a 1 µs GIL switch interval so the two
#: interleave finely; LOCKED=0 replaces the directory lock with nothing.
RACE_SCRIPT = """
import contextlib, os, sys, threading, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
import obskit
from obskit._metrics import multiprocess as _multiprocess
if not LOCKED:
    _multiprocess.locked = lambda path, exclusive: contextlib.nullcontext()
sys.setswitchinterval(1e-6)
counter = obskit.counter("jobs_total", "Jobs.", ["queue"])
histogram = obskit.histogram("job_seconds", "Job time.", ["queue"])
registry = _multiprocess.exposition_registry(DIRECTORY)
queues = [f"q{i}" for i in range(20)]
wrong, failed = [], []


def total():
    return sum(
        sample.value
        for metric in registry.collect() if metric.name == "jobs"
        for sample in metric.samples if sample.name == "jobs_total"
    )


for done in range(1, 31):
    pid = os.fork()
    if pid == 0:  # a worker that serves 20 jobs and dies
        for queue in queues:
            counter.labels(queue).inc()
            histogram.labels(queue).observe(0.1)
        os._exit(0)
    os.waitpid(pid, 0)
    stop = threading.Event()

    def scrape(expected=20 * done):
        while not stop.is_set():
            try:
                if total() != expected:
                    wrong.append(done)
            except Exception as error:
                failed.append(repr(error))

    thread = threading.Thread(target=scrape)
    thread.start()
    time.sleep(0.005)
    _multiprocess.compact(DIRECTORY, pid)
    time.sleep(0.005)
    stop.set()
    thread.join()
print("wrong", len(wrong), "failed", len(failed), failed[:1])
"""


@pytest.mark.parametrize("locked", [True, False])
def test_a_scrape_during_compaction_counts_the_dead_worker_once(
    tmp_path: Path, locked: bool
) -> None:
    """Compaction folds a dead worker's files into the merged ones and deletes them
    under an exclusive directory lock, a scrape reads under a shared one: every scrape
    during 30 compactions sees each dead worker's jobs exactly once. Without the lock
    (the control case) the same run sees totals double counted or missing, and scrapes
    that fail on a file deleted after they listed it; that is what made a gunicorn
    counter jump by one recycled worker's 50 requests and fall back (a reset to
    Prometheus)."""
    script = f"DIRECTORY = {str(tmp_path)!r}\nLOCKED = {locked}\n" + RACE_SCRIPT
    result = run_python(script, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    if locked:
        assert "wrong 0 failed 0 []" in result.stdout, result.stdout
    else:
        assert "wrong 0 failed 0 []" not in result.stdout, result.stdout


def test_the_directory_lock_never_waits_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock held elsewhere delays a scrape by at most LOCK_WAIT, then the scrape goes
    on and counts an internal error; a directory it cannot create the lock file in
    means no lock, not a failure."""
    import fcntl

    from obskit._lifecycle import internal_errors as _internal_errors
    from obskit._metrics import multiprocess as _multiprocess

    monkeypatch.setattr(_multiprocess, "LOCK_WAIT", 0.2)
    holder = os.open(tmp_path / _multiprocess.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a compaction that never ends
    before = _internal_errors.internal_errors().get("multiprocess", 0)
    try:
        started = time.monotonic()
        with _multiprocess.locked(str(tmp_path), exclusive=False):
            waited = time.monotonic() - started
    finally:
        os.close(holder)
    assert 0.2 <= waited < 1.0
    assert _internal_errors.internal_errors().get("multiprocess", 0) == before + 1
    with _multiprocess.locked(str(tmp_path / "missing"), exclusive=True):
        pass  # no such directory: nothing to lock, nothing raised


#: A scrape thread holds the directory lock (shared) while the main thread forks, as the
#: Celery worker's /metrics server may while its pool forks a child. The child checks
#: that the parent's lock still holds, then waits for it exclusively (a compaction)
#: while the parent's scrape ends.
FORK_DURING_SCRAPE = """
import fcntl, os, threading, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
import obskit
obskit.init(service_name="forky", traces_exporter="none", log_level="error")
from obskit._lifecycle import internal_errors
from obskit._metrics import multiprocess

multiprocess.LOCK_WAIT = 2.0
held, release = threading.Event(), threading.Event()


def scrape():
    with multiprocess.locked(DIRECTORY, exclusive=False):
        held.set()
        release.wait()


thread = threading.Thread(target=scrape)
thread.start()
held.wait()
ready_read, ready_write = os.pipe()
pid = os.fork()
if pid == 0:
    probe = os.open(os.path.join(DIRECTORY, multiprocess.LOCK_NAME), os.O_RDWR)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        parent_still_holds = False
    except BlockingIOError:
        parent_still_holds = True
    os.close(probe)
    os.write(ready_write, b"x")
    started = time.monotonic()
    with multiprocess.locked(DIRECTORY, exclusive=True):
        waited = time.monotonic() - started
    errors = internal_errors.internal_errors().get("multiprocess", 0)
    print(f"child parent_still_holds={parent_still_holds} waited={waited:.2f} errors={errors}",
          flush=True)
    os._exit(0)
os.read(ready_read, 1)
time.sleep(0.1)
release.set()
thread.join()
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_child_forked_during_a_scrape_does_not_keep_the_directory_lock(
    tmp_path: Path,
) -> None:
    """flock belongs to the open file, and a forked child gets a copy of every
    descriptor: a child forked while a scrape thread held the directory lock would hold
    it for its whole life (a Celery pool child then waited out LOCK_WAIT on its own
    copy at each compaction, reported for work too late, and was replaced). The parent
    unlocks explicitly at the end of its block, which frees every copy: the lock still
    holds in the child while the parent's scrape runs, and once it ends the child's
    compaction gets the lock at once, with no internal error."""
    result = run_python(f"DIRECTORY = {str(tmp_path)!r}\n" + FORK_DURING_SCRAPE, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("child parent"))
    fields = dict(part.split("=") for part in line.split()[1:])
    assert fields["parent_still_holds"] == "True", result.stdout
    assert fields["errors"] == "0", result.stdout
    assert "child exit 0" in result.stdout, result.stdout
