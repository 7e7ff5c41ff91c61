"""Helpers shared by the reliability scenarios: the example Flask app under gunicorn,
a bounded paced load generator, and per-worker resource figures read from /proc."""

from __future__ import annotations

import collections
import threading
import time
import urllib.request
from pathlib import Path

from tests.servers import Server


def flask_gunicorn(
    workdir: Path,
    env: dict[str, str],
    workers: int = 2,
    worker_class: str = "sync",
    threads: int = 1,
    measure_coverage: bool = True,
    stdout: int | None = None,
) -> Server:
    """examples.flask_app under gunicorn (obskit's hooks from examples/gunicorn.conf.py);
    the pod's /metrics is on ``server.metrics_url``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Server(
        workdir,
        [
            "gunicorn",
            "-c",
            "examples/gunicorn.conf.py",
            "--workers",
            str(workers),
            "--worker-class",
            worker_class,
            "--threads",
            str(threads),
            "--graceful-timeout",
            "5",
            "--bind",
            "127.0.0.1:{port}",
            "examples.flask_app:create_app()",
        ],
        {"PROMETHEUS_MULTIPROC_DIR": str(workdir / "multiproc"), **env},
        measure_coverage=measure_coverage,
        stdout=stdout,
    )


def paced_load(
    url: str,
    rate: float,
    seconds: float,
    threads: int = 4,
    path: str = "/post/{n}",
    latencies: list[float] | None = None,
) -> collections.Counter[int]:
    """~``rate`` req/s for ``seconds`` from ``threads`` client threads; status counts
    (0 = the request failed at the HTTP level). Each request's seconds are appended to
    ``latencies`` when given."""
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    gap = threads / rate

    def worker(index: int) -> None:
        next_at = time.monotonic() + index * gap / threads
        n = index
        while time.monotonic() < deadline:
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at += gap
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url + path.format(n=n), timeout=10) as reply:
                    reply.read()
                    status = reply.status
            except Exception:
                status = 0
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                if latencies is not None:
                    latencies.append(elapsed)
            n += threads

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return statuses


def worker_pids(server: Server) -> list[int]:
    """The gunicorn master's workers: its children but the /metrics server process that
    obskit's hooks start beside it."""
    master = str(server.process.pid)
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == master and b"obskit._metrics.pod_server" not in command:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def process_figures(pid: int) -> dict[str, int]:
    """RSS (kB), thread count and open file descriptors of one process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }
