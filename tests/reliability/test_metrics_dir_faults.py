"""A full, read-only or vanished multiprocess metrics directory: never an error answered,
never a dead process (SIGBUS), and ``/metrics`` says what is wrong.

The full and read-only filesystems are real: a tmpfs the test mounts (root only, see
``tests/reliability/mounts.py``).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.mounts import fill, read_only_directory, remount, tmpfs
from tests.reliability.rig import worker_pids
from tests.servers import Server, run_python

ROUTE = "/post/<int:post_id>"


def _serve(workdir: Path, directory: Path, workers: int = 2) -> Server:
    """tests.reliability.metrics_app under gunicorn with obskit's hooks, its metrics in
    ``directory``."""
    return Server(
        workdir,
        [
            "gunicorn",
            "-c",
            "examples/gunicorn.conf.py",
            "--workers",
            str(workers),
            "--bind",
            "127.0.0.1:{port}",
            "tests.reliability.metrics_app:create_app()",
        ],
        {"PROMETHEUS_MULTIPROC_DIR": str(directory), "OTEL_TRACES_EXPORTER": "none"},
    )


def _load(server: Server, paths: list[str], threads: int = 8) -> Counter[int]:
    """GET every path (``threads`` at a time); the count of each status (0: no answer)."""

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as reply:
                reply.read()
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (OSError, http.client.HTTPException):
            return 0

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return Counter(pool.map(get, paths))


def _metrics(server: Server) -> tuple[int, dict[str, float]]:
    """The pod's /metrics (the master's server process): its status and every sample
    line as name{labels} -> value."""
    server.scrape(accept="text/plain")  # (waits, bounded, for the server process)
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
        status = int(reply.status)
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return status, samples


def _dropped(samples: dict[str, float], reason: str) -> float:
    return samples.get(f'obskit_dropped_total{{reason="{reason}",signal="metrics"}}', 0.0)


def _requests(samples: dict[str, float]) -> float:
    """Requests counted for ROUTE (every status)."""
    return sum(
        value
        for name, value in samples.items()
        if name.startswith("http_server_request_duration_seconds_count{")
        and f'http_route="{ROUTE}"' in name
    )


def _sigbus_lines(server: Server) -> list[str]:
    return [line for line in server.stderr_path.read_text().splitlines() if "SIGBUS" in line]


@pytest.mark.slow
def test_a_filling_tmpfs_kills_neither_the_master_nor_a_worker(tmp_path: Path) -> None:
    """gunicorn (2 workers) on a 1 MiB tmpfs filled to the last block, under load that adds
    series, with a worker SIGKILLed while it is full: every request answered 200, the
    master alive, no worker dead of SIGBUS, /metrics answers with obskit_multiprocess_ok 0
    and obskit_dropped_total{reason="dir_full"}; once there is room again (the ballast
    gone, the tmpfs grown), the workers write what they kept and obskit_multiprocess_ok
    is 1."""
    with tmpfs(tmp_path / "metrics", "1m") as directory:
        server = _serve(tmp_path, directory)
        try:
            warm = _load(server, [f"/post/{n}" for n in range(50)])
            assert warm == {200: 50}
            ballast = fill(directory)
            assert os.statvfs(directory).f_bavail == 0
            statuses = _load(server, [f"/grow/{n}" for n in range(600)])
            statuses += _load(server, [f"/post/{n}" for n in range(200)])
            victim = worker_pids(server)[0]
            os.kill(victim, signal.SIGKILL)  # the master compacts its files on a full disk
            statuses += _load(server, [f"/grow/{n}" for n in range(600, 800)])
            assert statuses == {200: 1000}
            assert server.process.poll() is None
            assert _sigbus_lines(server) == []
            status, samples = _metrics(server)
            assert status == 200
            assert samples["obskit_multiprocess_ok"] == 0.0
            assert _dropped(samples, "dir_full") > 0
            full_series = sum(name.startswith("grow_total{") for name in samples)

            # Room again: the ballast goes, and the tmpfs grows, since what the workers
            # kept can need more than the ballast held (prometheus-client doubles a full
            # file: 128 KiB more for a 128 KiB one).
            ballast.unlink()
            remount(directory, "size=4m")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                time.sleep(1.1)  # each worker retries the directory at most once a second
                assert _load(server, [f"/grow/{n}" for n in range(20)]) == {200: 20}
                time.sleep(0.3)
                status, samples = _metrics(server)
                if samples["obskit_multiprocess_ok"] == 1.0:
                    break
            assert samples["obskit_multiprocess_ok"] == 1.0
            assert sum(name.startswith("grow_total{") for name in samples) > full_series
            assert server.process.poll() is None
            assert _sigbus_lines(server) == []
        finally:
            server.stop()


COMPACTION_ON_A_FULL_DISK = """
import os
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
import obskit
from obskit._lifecycle import self_stats
from obskit._metrics import multiprocess
from obskit._metrics.registry import store
from tests.reliability.mounts import fill

counter = obskit.counter("jobs_total", "Jobs.", ["queue"])
histogram = obskit.histogram("job_seconds", "Job time.", ["queue"])
registry = multiprocess.exposition_registry(DIRECTORY)


def total():
    return sum(
        sample.value
        for metric in registry.collect() if metric.name == "jobs"
        for sample in metric.samples if sample.name == "jobs_total"
    )


dead = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        for queue in range(100):
            counter.labels(str(queue)).inc()
            histogram.labels(str(queue)).observe(0.1)
        os._exit(0)
    os.waitpid(pid, 0)
    dead.append(pid)
before = total()
ballast = fill(__import__("pathlib").Path(DIRECTORY))
for pid in dead:
    multiprocess.compact(DIRECTORY, pid)  # never raises
errors = self_stats.value("obskit_internal_errors", component="multiprocess")
kept = sorted(name for name in os.listdir(DIRECTORY) if name.startswith("counter_"))
during = total()
ballast.unlink()
multiprocess.compact(DIRECTORY, dead[0])  # the next compaction folds what is left
for pid in dead[1:]:
    multiprocess.compact(DIRECTORY, pid)
after = total()
left = sorted(name for name in os.listdir(DIRECTORY) if name.endswith(".db"))
print(before, during, after, errors, len(kept), left)
"""


def test_compaction_on_a_full_tmpfs_keeps_the_dead_workers_files_and_counts(
    tmp_path: Path,
) -> None:
    """compact() on a full tmpfs (3 dead workers, 100 counter and histogram series each)
    raises nothing and faults nothing: the merged file cannot be written (counted in
    obskit_internal_errors_total{component="multiprocess"}), so the dead workers' files
    are kept and a scrape still counts them all; with room again, a later compaction
    folds them into the merged files and the totals stay the same."""
    with tmpfs(tmp_path / "metrics", "4m") as directory:
        script = f"DIRECTORY = {str(directory)!r}\n" + COMPACTION_ON_A_FULL_DISK
        result = run_python(script, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    before, during, after, errors, kept, left = result.stdout.split(maxsplit=5)
    assert float(before) == float(during) == float(after) == 300.0
    assert int(errors) >= 1
    assert int(kept) == 3  # each dead worker's counter file is still there
    assert left.strip() == "['counter_merged.db', 'histogram_merged.db']"


VALUES_ON_A_FULL_DISK = """
import os, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
import obskit
from obskit._metrics.registry import store
from prometheus_client import generate_latest
from tests.reliability.mounts import remount


def scrape():
    return generate_latest(store().exposition()).decode()


counter = obskit.counter("fill_total", "Fill.", ["n"])
for n in range(1500):  # about 100 kB of series for a 100 kB filesystem
    counter.labels(str(n)).inc()
counter.labels("0").inc()
full = scrape()
remount(__import__("pathlib").Path(DIRECTORY), "size=4m")
time.sleep(1.1)  # the values are written at the first update after the retry interval
counter.labels("0").inc()
after = scrape()
for name, text in (("full", full), ("after", after)):
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    series = [line for line in lines if line.startswith("fill_total")]
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    print(
        name,
        len(series),
        sum(float(line.rsplit(" ", 1)[1]) for line in series),
        values["obskit_multiprocess_ok"],
        values['obskit_dropped_total{reason="dir_full",signal="metrics"}'],
    )
"""


def test_values_on_a_filling_tmpfs_fault_nothing_and_are_written_once_there_is_room(
    tmp_path: Path,
) -> None:
    """1,500 counter series on a 100 kB tmpfs: the process is not killed (the file's space
    is reserved before it is written), the series that do not fit are kept in the process
    and counted in obskit_dropped_total{reason="dir_full"}, obskit_multiprocess_ok is 0;
    once the filesystem has room, all 1,500 series with every increment are in /metrics
    and obskit_multiprocess_ok is 1."""
    with tmpfs(tmp_path / "metrics", "100k") as directory:
        script = f"DIRECTORY = {str(directory)!r}\n" + VALUES_ON_A_FULL_DISK
        result = run_python(script, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    full, after = (line.split() for line in result.stdout.splitlines()[-2:])
    # name, series in /metrics, their total, obskit_multiprocess_ok, dir_full drops
    assert full[0] == "full"
    assert int(full[1]) < 1500
    assert float(full[3]) == 0.0
    assert float(full[4]) > 0
    assert after[0] == "after"
    assert (int(after[1]), float(after[2]), float(after[3])) == (1500, 1502.0, 1.0)
    assert result.stderr.count("does not take updates (dir_full)") == 1  # rate-limited


@pytest.mark.slow
def test_a_read_only_directory_never_raises_into_the_app(tmp_path: Path) -> None:
    """gunicorn (2 workers) whose metrics directory is read-only from the start: 600
    requests (traced calls, counter.inc(), histogram observations) all answered 200, 0
    errors; the pod's /metrics answers 200 with obskit_multiprocess_ok 0, and the
    workers, whose counts no file can take, each log the reason (rate-limited)."""
    with read_only_directory(tmp_path / "metrics") as directory:
        server = _serve(tmp_path, directory)
        try:
            statuses = _load(server, [f"/post/{n}" for n in range(300)])
            statuses += _load(server, [f"/grow/{n}" for n in range(300)])
            assert statuses == {200: 600}
            status, samples = _metrics(server)
            assert status == 200
            assert samples["obskit_multiprocess_ok"] == 0.0
            assert server.process.poll() is None
            lines = server.lines()
            errors = [line for line in lines if line.get("level") == "error"]
            assert errors == []
            assert [line for line in lines if "(dir_read_only)" in line.get("event", "")]
        finally:
            server.stop()


@pytest.mark.slow
def test_a_vanished_directory_never_raises_and_every_count_returns_with_it(
    tmp_path: Path,
) -> None:
    """gunicorn (2 workers) whose metrics directory is deleted under it: every request
    answered 200, the pod's /metrics answers 200 with obskit_multiprocess_ok 0 (the
    workers log the reason); once the directory is made again, the workers write what
    they kept: /metrics counts every request served, before, during and after, and
    obskit_dropped_total{reason="dir_missing"}."""
    directory = tmp_path / "metrics"
    server = _serve(tmp_path, directory)
    try:
        served = 0
        statuses = _load(server, [f"/post/{n}" for n in range(100)])
        served += 100
        shutil.rmtree(directory)
        time.sleep(1.1)  # each worker checks that its files exist at most once a second
        statuses += _load(server, [f"/post/{n}" for n in range(400)])
        served += 400
        assert statuses == {200: 500}
        status, samples = _metrics(server)
        assert status == 200
        assert samples["obskit_multiprocess_ok"] == 0.0
        assert [line for line in server.lines() if "(dir_missing)" in line.get("event", "")]

        directory.mkdir()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1.1)  # each worker retries the directory at most once a second
            assert _load(server, [f"/post/{n}" for n in range(20)]) == {200: 20}
            served += 20
            time.sleep(0.3)  # (a request is counted as its response ends)
            status, samples = _metrics(server)
            # (the drops written back with the directory keep it at 0 for a few seconds)
            if _requests(samples) == served and samples["obskit_multiprocess_ok"] == 1.0:
                break
        assert _requests(samples) == served
        assert samples["obskit_multiprocess_ok"] == 1.0
        assert _dropped(samples, "dir_missing") > 0
        assert server.process.poll() is None
    finally:
        server.stop()


def test_the_dropped_counts_are_reserved_in_every_counter_file(tmp_path: Path) -> None:
    """A process's counter file holds obskit_dropped_total{signal, reason} for every
    directory reason from the start, at 0 (counting a failure never needs room)."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        import obskit
        obskit.counter("jobs_total", "Jobs.").inc()
        from obskit._metrics.metric_files import read_entries
        path = os.path.join({str(tmp_path)!r}, f"counter_{{os.getpid()}}.db")
        for key, value, _ in read_entries(path):
            print(key, value)
        """
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    reserved = re.findall(r'"reason": "(\w+)", "signal": "(\w+)"', result.stdout)
    assert sorted(reserved) == sorted(
        (reason, signal)
        for signal in ("metrics", "exemplars")
        for reason in ("dir_full", "dir_read_only", "dir_missing", "dir_error")
    )
