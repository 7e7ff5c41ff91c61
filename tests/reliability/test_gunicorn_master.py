"""Nothing obskit runs in the gunicorn master can end it, on gunicorn 22, 23 and the newest:
several workers killed at once (an OOM kill, a dependency hanging past the timeout)."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.rig import flask_gunicorn, worker_pids
from tests.servers import Server, run_python

ROUTE = "/post/<int:post_id>"
VERSIONS = ["22.0.0", "23.0.0", "newest"]


def _count(server: Server) -> float:
    """Requests to ROUTE counted in the pod's /metrics (the master's server process)."""
    text = server.scrape(accept="text/plain")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count{")
        and f'http_route="{ROUTE}"' in line
    )


def _get(server: Server, count: int) -> None:
    def run(offset: int) -> None:
        for n in range(offset, count, 4):
            with urllib.request.urlopen(f"{server.url}/post/{n}", timeout=10) as reply:
                assert reply.status == 200

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path | None], Server]]:
    """Start the example app under gunicorn (obskit's hooks, 4 workers) with the gunicorn
    in the given directory first on PYTHONPATH (None: the installed one)."""
    started: list[Server] = []

    def start(gunicorn: Path | None) -> Server:
        path = os.pathsep.join(
            p for p in (str(gunicorn or ""), os.environ.get("PYTHONPATH", "")) if p
        )
        env = {"OTEL_TRACES_EXPORTER": "none", **({"PYTHONPATH": path} if path else {})}
        server = flask_gunicorn(tmp_path, env, workers=4)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", VERSIONS)
def test_four_workers_killed_at_once_never_end_the_master(
    version: str,
    gunicorn_release: Callable[[str], Path],
    serve: Callable[[Path | None], Server],
) -> None:
    """gunicorn (this version, 4 workers, obskit's hooks): 5 times over, all 4 workers
    SIGKILLed at once. The master survives every round and replaces them; the request
    count in /metrics is exactly what was served before each kill (the dead workers'
    counts are folded, once) and only grows."""
    server = serve(gunicorn_release(version))
    if version != "newest":
        assert f"Starting gunicorn {version}" in server.stderr_path.read_text()
    served = 0
    counts = []
    for _ in range(5):
        _get(server, 40)
        served += 40
        time.sleep(0.3)  # (a request is counted as its response ends)
        assert _count(server) == served
        workers = set(worker_pids(server))
        assert len(workers) == 4
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.process.poll() is None:
            now = set(worker_pids(server))
            if len(now) == 4 and not now & workers:
                break
            time.sleep(0.1)
        assert server.process.poll() is None, server.stderr_path.read_text()[-3000:]
        counts.append(_count(server))
        assert counts[-1] == served
    assert counts == sorted(counts)
    assert "Traceback" not in server.stderr_path.read_text()


INTERRUPTED_COMPACTION = """
import os, signal
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
import obskit
from obskit._metrics import multiprocess

counter = obskit.counter("jobs_total", "Jobs.", ["queue"])
dead = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        counter.labels("a").inc(5)
        os._exit(0)
    os.waitpid(pid, 0)
    dead.append(pid)

order = []
real_fold = multiprocess._fold


def fold(files, merged, mode):
    order.append(("fold", os.path.basename(files[0])))
    if len(order) == 1:  # a SIGCHLD-like signal arrives in the middle of the first fold
        os.kill(os.getpid(), signal.SIGUSR1)
        order.append(("after the signal",))
    real_fold(files, merged, mode)


def handler(signum, frame):
    multiprocess.compact(DIRECTORY, dead[1])  # as gunicorn 22/23's reap_workers does
    order.append(("nested call returned",))


multiprocess._fold = fold
signal.signal(signal.SIGUSR1, handler)
multiprocess.compact(DIRECTORY, dead[0])
registry = multiprocess.exposition_registry(DIRECTORY)
total = sum(
    sample.value
    for metric in registry.collect() if metric.name == "jobs"
    for sample in metric.samples if sample.name == "jobs_total"
)
print(order)
print(total, sorted(name for name in os.listdir(DIRECTORY) if name.endswith(".db")))
"""


def test_a_compaction_interrupted_by_another_does_both_after_each_other(tmp_path: Path) -> None:
    """A compaction interrupted by a signal handler that asks for another (gunicorn 22 and
    23 run child_exit inside their SIGCHLD handler) does not run the second inside the
    first: the nested call returns at once, and the first then folds the second worker
    too; each dead worker is counted once."""
    script = f"DIRECTORY = {str(tmp_path)!r}\n" + INTERRUPTED_COMPACTION
    result = run_python(script, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    order, totals = result.stdout.splitlines()[-2:]
    assert order.startswith("[('fold', 'counter_")
    assert order.index("nested call returned") < order.index("after the signal")
    assert order.count("'fold'") == 2
    assert totals == "10.0 ['counter_merged.db']"
