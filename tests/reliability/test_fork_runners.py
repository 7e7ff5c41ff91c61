"""Fork safety for every fork-based runner, not only gunicorn: a child forked at any moment
after ``init()`` (export thread busy, another thread logging) never hangs, and exports
its own spans. Each runner is real; a timeout fails the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.receivers import OtlpHttpReceiver
from tests.reliability.unavailable import unavailable
from tests.servers import ROOT, clean_env, run_python

MULTIPROCESSING = """
import multiprocessing, os, sys, threading, time
import obskit

obskit.init(service_name="forky", otlp_endpoint=ENDPOINT)
log = obskit.get_logger("forky")
# First imported after init(), as Celery and many libraries do: the executor module's fork
# hooks are then registered after the tracer provider's.
from concurrent.futures import ThreadPoolExecutor

stop = threading.Event()


def busy():
    n = 0
    while not stop.is_set():  # spans to export and log lines, all the time
        with obskit.span("parent-busy", n=n):
            log.info("parent working", n=n)
        n += 1
        time.sleep(0.001)


def job(index):
    with obskit.span(f"child-{index}", index=index):
        log.info("child working", index=index)


pool = ThreadPoolExecutor(max_workers=1)
pool.submit(busy)
context = multiprocessing.get_context("fork")
hung = failed = 0
for batch in range(5):
    children = [context.Process(target=job, args=(n,)) for n in range(batch * 10, batch * 10 + 10)]
    for child in children:
        child.start()
    for child in children:
        child.join(20)
        if child.is_alive():
            hung += 1
            child.kill()
            child.join()
        elif child.exitcode != 0:
            failed += 1
stop.set()
pool.shutdown()
obskit.shutdown()
print("hung", hung, "failed", failed, "parent", os.getpid(), file=sys.stderr)
"""


@pytest.mark.slow
def test_fifty_multiprocessing_children_forked_after_init_never_hang_and_export_their_spans(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """50 multiprocessing (fork) children started after init() while a thread logs and makes
    spans that the export thread sends: none hangs (20 s each), each exits 0, and each
    child's own span reaches the OTLP receiver from that child's process.pid (obskit
    flushes a multiprocessing child when its target returns)."""
    script = f"ENDPOINT = {http_receiver.endpoint!r}\n" + MULTIPROCESSING
    result = run_python(script, {"OTEL_BSP_SCHEDULE_DELAY": "100"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stderr.strip().splitlines()[-1].split()
    assert summary[:4] == ["hung", "0", "failed", "0"], result.stderr[-3000:]
    parent = int(summary[5])
    names = {f"child-{n}" for n in range(50)}
    deadline = time.monotonic() + 30
    children: dict[str, int] = {}
    while time.monotonic() < deadline and len(children) < 50:
        children = {
            span.name: int(span.resource["process.pid"])
            for span in http_receiver.spans
            if span.name in names
        }
        time.sleep(0.2)
    assert set(children) == names
    assert len(set(children.values())) == 50  # each from its own process
    assert parent not in children.values()
    assert result.stdout.count('"child working"') == 50


HOOK_ONCE = """
import os
from obskit._lifecycle import after_fork

runs = []
after_fork.in_child(lambda: runs.append(1))
after_fork.register()  # first call: its imports reach modules that call register() too
pid = os.fork()
if pid == 0:
    os._exit(len(runs))
print("child ran the callback", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "times")
"""


def test_the_after_fork_hook_is_installed_once_however_register_is_reached() -> None:
    """after_fork.register() called first from a cold start (its own imports call it again):
    a forked child runs each registered callback exactly once."""
    result = run_python(HOOK_ONCE, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "child ran the callback 1 times"


CELERY_APP = """
import os

import obskit
from celery import Celery

obskit.init(service_name="celery-prefork")  # in the app module, as apps do
app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BROKER"])


@app.task
def add(x, y):
    with obskit.span("add", x=x, y=y):
        return x + y
"""


@pytest.mark.slow
def test_a_celery_prefork_worker_started_after_init_runs_its_task(
    tmp_path: Path, redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """A Celery worker (prefork pool, 2 children, redis broker) whose app module calls
    init(): a task sent to it runs and returns within 30 s (it hung forever in the child's
    after-fork handler), and the task's span reaches the OTLP receiver from a pool child,
    not from the worker's main process."""
    try:
        import celery  # noqa: F401 - only the worker and the client below use it
        import redis  # noqa: F401 - the broker's client (celery's [redis] extra)
    except ImportError:
        unavailable("celery is not installed (pip install 'celery[redis]')")
    (tmp_path / "tasks.py").write_text(textwrap.dedent(CELERY_APP))
    env = {"BROKER": redis_url, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    stdout = (tmp_path / "worker.out").open("w")
    stderr = (tmp_path / "worker.err").open("w")
    options = ["--pool", "prefork", "--concurrency", "2", "--loglevel", "info"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", *options],
        cwd=tmp_path,
        env=clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            **env,
        ),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,  # its pool children are stopped with it, below
    )
    try:
        client = run_python(
            "from tasks import add\nprint('result', add.delay(2, 3).get(timeout=30))",
            {**env, "OTEL_TRACES_EXPORTER": "none"},
            timeout=90,
        )
        assert client.returncode == 0, (
            client.stderr[-2000:] + (tmp_path / "worker.err").read_text()[-3000:]
        )
        assert "result 5" in client.stdout
        spans = http_receiver.wait_for(1, timeout=20)
        (task,) = [span for span in spans if span.name == "add"]
        assert int(task.resource["process.pid"]) != worker.pid
        assert task.resource["service.name"] == "celery-prefork"
    finally:
        worker.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # the pool children, hung or not
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        stdout.close()
        stderr.close()
