"""Cost per Celery task round trip with a real worker: sent by a producer process through
a real redis broker, run by ``celery worker`` (prefork, one child), its result read back
-- not eager mode. Cases (``celery_tasks.py``, one worker and one producer each):

- ``bare Celery``: nothing watches it;
- ``OpenTelemetry CeleryInstrumentor``: OpenTelemetry's Celery instrumentation (its
  PRODUCER and CONSUMER spans) on the SDK, in both processes;
- ``obskit``: ``obskit.init()`` in both (PRODUCER and CONSUMER spans, the task histogram
  with its exemplar and the outcome counter in a multiprocess directory).

What a task costs is CPU time: the producer's while it sends (``time.process_time``
around ``delay()``) plus the whole worker's (main process and pool child, from
``/proc``) while it runs the tasks, per task. Wall time per task (send, run, result)
is printed too. Only the last task of a round stores a result (see ``celery_tasks.py``).
Every round runs ``tasks`` tasks through each case in turn (a new order each round);
the table shows medians over rounds: the CPU per task, the cost added over bare in the
same round (paired, so the machine's slower and faster stretches cancel), its spread,
and obskit's added cost over OpenTelemetry's.

Needs ``redis-server`` and Celery with its redis client; OpenTelemetry's instrumentation
in a separate virtualenv, pinned to the installed SDK so pip does not move it::

    python -m venv /tmp/venv-bench-celery
    /tmp/venv-bench-celery/bin/pip install -c <(python -m obskit constraints) \\
        -e '.[otlp]' 'celery[redis]' opentelemetry-instrumentation-celery
    /tmp/venv-bench-celery/bin/python benchmarks/bench_celery.py [rounds] [tasks]

With ``--instructions [tasks]`` it counts machine instructions instead (valgrind's
cachegrind, Debian package ``valgrind``), a measure the shared machine's noise does not
move: per task, the producer's and the pool child's instructions with ``tasks`` more
tasks minus without (see :func:`counted`).

A missing peer is skipped with a note. Every process started here is stopped in a
``finally`` (the workers with their process group).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CASES = {
    "bare Celery": "bare",
    "OpenTelemetry CeleryInstrumentor": "otel",
    "obskit": "obskit",
}
_TICKS = os.sysconf("SC_CLK_TCK")
#: redis-server options: no persistence, and its working directory (given last).
NO_FILES = ("--save", "", "--appendonly", "no", "--dir")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants, from ``/proc``."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


class Case:
    """One case's worker and producer processes."""

    @staticmethod
    def environment(case: str, broker: str) -> dict[str, str]:
        """This environment without ``OTEL_*``/``OBSKIT_*`` variables, for ``case``; no
        /metrics server (its thread's wake-ups are no task's cost)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
        env.update(
            CASE=case,
            BROKER=broker,
            PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
            OBSKIT_METRICS_PORT="0",
        )
        return env

    def __init__(self, case: str, broker: str, workdir: Path) -> None:
        self.errors = [workdir / f"worker-{case}.err", workdir / f"producer-{case}.err"]
        self.env = self.environment(case, broker)
        worker_env = dict(self.env)
        if case == "obskit":  # as a prefork worker with a /metrics for its children runs
            directory = workdir / f"metrics-{case}"
            directory.mkdir()
            worker_env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        options = ["--pool", "prefork", "--concurrency", "1", "--loglevel", "warning"]
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        command = [sys.executable, "-m", "celery", "--quiet", "-A", "celery_tasks", "worker"]
        self.worker = subprocess.Popen(
            [*command, *options, *quiet, "--queues", f"bench-{case}"],
            cwd=HERE,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=self.errors[0].open("w"),
            start_new_session=True,
        )
        self.producer = subprocess.Popen(
            [sys.executable, str(HERE / "celery_tasks.py")],
            cwd=HERE,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors[1].open("w"),
            text=True,
        )

    def run(self, tasks: int) -> tuple[float, float]:
        """(CPU seconds per task, wall seconds per task) for ``tasks`` tasks."""
        assert self.producer.stdin is not None
        assert self.producer.stdout is not None
        before = tree_cpu(self.worker.pid)
        self.producer.stdin.write(f"{tasks}\n")
        self.producer.stdin.flush()
        line = self.producer.stdout.readline()
        if not line:
            text = "\n".join(path.read_text()[-2000:] for path in self.errors)
            raise RuntimeError(f"the producer stopped:\n{text}")
        worker = tree_cpu(self.worker.pid) - before
        answer = json.loads(line)
        return (answer["sending_cpu"] + worker) / tasks, answer["wall"] / tasks

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.producer.stdin is not None:
                self.producer.stdin.close()
        try:
            self.producer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.producer.kill()
            self.producer.wait()
        with contextlib.suppress(ProcessLookupError):
            self.worker.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.worker.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # its pool child too
            os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)


def available(notes: list[str]) -> dict[str, str]:
    """The cases whose peers are installed (with a note for each one skipped)."""
    cases = dict(CASES)
    if importlib.util.find_spec("opentelemetry.instrumentation.celery") is None:
        del cases["OpenTelemetry CeleryInstrumentor"]
        notes.append(
            "OpenTelemetry's Celery instrumentation is not installed: its case is skipped"
            " (see this script's docstring)"
        )
    return cases


def main() -> None:
    if "--instructions" in sys.argv:
        arguments = [arg for arg in sys.argv[1:] if arg != "--instructions"]
        instructions(int(arguments[0]) if arguments else 200)
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    notes: list[str] = []
    redis_server = shutil.which("redis-server")
    if redis_server is None or importlib.util.find_spec("celery") is None:
        print("note: skipped: needs redis-server and celery[redis]")
        return
    cases = available(notes)
    workdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    port = free_port()
    broker = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", *NO_FILES, str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running: dict[str, Case] = {}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        for name, case in cases.items():
            running[name] = Case(case, url, workdir)
        for case in running.values():  # warm-up: workers ready, imports and caches done
            case.run(max(tasks // 10, 20))
        order = list(running)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                per_task, per_task_wall = running[name].run(tasks)
                cpu[name].append(per_task)
                wall[name].append(per_task_wall)
    finally:
        for case in running.values():
            case.stop()
        broker.kill()
        broker.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    report(cpu, wall, rounds, tasks, notes)


#: valgrind counting instructions only (no cache simulation, no output file).
CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
#: Tasks every instruction-counting run sends first (imports, caches, connections).
WARM_UP = 50


def _refs(report: str) -> int | None:
    """The instruction total ("I refs") of a cachegrind report, if it has one."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    return int(found.group(1).replace(",", "")) if found is not None else None


def counted(case: str, broker: str, workdir: Path, tasks: int) -> tuple[int, int]:
    """Instructions of the producer and of the worker's pool child (from its fork to its
    exit) when ``WARM_UP`` and then ``tasks`` tasks go through ``case``, under valgrind:
    ``(producer, child)``.

    The worker's main process is left out: it runs no instrumentation per task, and its
    event loop wakes on timers, so its count follows the wall time valgrind takes."""
    logs = workdir / f"vg-{case}-{tasks}"
    logs.mkdir()
    queue = f"vg-{case}-{tasks}"
    env = {**Case.environment(case, broker), "PYTHONHASHSEED": "0", "QUEUE": queue}
    worker_env = dict(env)
    if case == "obskit":
        directory = logs / "metrics"
        directory.mkdir()
        worker_env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    wrapper = (*CACHEGRIND, f"--log-file={logs}/worker.%p")
    options = ["--pool", "prefork", "--concurrency", "1", "--loglevel", "warning"]
    options += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--queues", queue]
    command = [sys.executable, "-m", "celery", "--quiet", "-A", "celery_tasks", "worker"]
    worker = subprocess.Popen(
        [*wrapper, *command, *options],
        cwd=HERE,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        producer = subprocess.run(
            [*CACHEGRIND, sys.executable, str(HERE / "celery_tasks.py")],
            cwd=HERE,
            env=env,
            input=f"{WARM_UP}\n" + (f"{tasks}\n" if tasks else ""),
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    child = [
        _refs(log.read_text())
        for log in logs.glob("worker.*")
        if f"Parent PID: {worker.pid}" in log.read_text()
    ]
    sent = _refs(producer.stderr)
    if len(child) != 1 or child[0] is None or sent is None:
        raise RuntimeError(f"no instruction counts for {case!r} ({tasks} tasks) in {logs}")
    return sent, child[0]


def instructions(tasks: int) -> None:
    """Instructions per task round trip (producer + pool child), by case: the count with
    ``tasks`` tasks minus the count without, divided by ``tasks``."""
    notes: list[str] = []
    redis_server = shutil.which("redis-server")
    if redis_server is None or shutil.which("valgrind") is None:
        print("note: skipped: needs redis-server and valgrind")
        return
    cases = available(notes)
    workdir = Path(tempfile.mkdtemp(prefix="bench-celery-vg-"))
    port = free_port()
    broker = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", *NO_FILES, str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        time.sleep(0.5)
        runs = [(name, count) for name in cases for count in (0, tasks)]
        with ThreadPoolExecutor(2) as pool:  # valgrind runs one thread: two at a time
            found = pool.map(lambda run: counted(cases[run[0]], url, workdir, run[1]), runs)
            totals = dict(zip(runs, found, strict=True))
    finally:
        broker.kill()
        broker.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    sides = {
        name: [(totals[name, tasks][side] - totals[name, 0][side]) / tasks for side in (0, 1)]
        for name in cases
    }
    per_task = {name: sum(values) for name, values in sides.items()}
    bare = per_task["bare Celery"]
    print(f"instructions per task (valgrind: producer + pool child), {tasks} tasks after {WARM_UP}")
    print(f"{'case':<36} {'instructions':>13} {'added':>10} {'producer':>10} {'child':>10}")
    rows = []
    for name, value in per_task.items():
        sent, ran = (
            side - base for side, base in zip(sides[name], sides["bare Celery"], strict=True)
        )
        rows.append(
            {
                "case": name,
                "instructions": round(value),
                "added": round(value - bare),
                "added_producer": round(sent),
                "added_child": round(ran),
            }
        )
        print(f"{name:<36} {value:>13,.0f} {value - bare:>10,.0f} {sent:>10,.0f} {ran:>10,.0f}")
    ratio = None
    peer = per_task.get("OpenTelemetry CeleryInstrumentor")
    if peer is not None and peer > bare:
        ratio = round((per_task["obskit"] - bare) / (peer - bare), 3)
        print(f"obskit added / OpenTelemetry CeleryInstrumentor added: {ratio:.2f}x")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "celery_instructions.json").write_text(
        json.dumps({"rows": rows, "notes": notes, "added_ratio_vs_otel": ratio}, indent=2)
    )


def report(
    cpu: dict[str, list[float]],
    wall: dict[str, list[float]],
    rounds: int,
    tasks: int,
    notes: list[str],
) -> None:
    """Medians over rounds; the added cost is paired: each round's case minus that
    round's bare (the machine's slower and faster stretches cancel)."""
    bare = cpu["bare Celery"]
    rows: list[dict[str, Any]] = []
    print(f"per task, {rounds} rounds x {tasks} tasks, worker prefork -c 1 (medians)")
    print(f"{'case':<36} {'CPU us':>9} {'added us':>9} {'added min-max us':>17} {'wall us':>9}")
    for name, values in cpu.items():
        added = [value - base for value, base in zip(values, bare, strict=True)]
        row = {
            "case": name,
            "cpu_us": round(statistics.median(values) * 1e6, 1),
            "added_us": round(statistics.median(added) * 1e6, 1),
            "added_min_us": round(min(added) * 1e6, 1),
            "added_max_us": round(max(added) * 1e6, 1),
            "wall_us": round(statistics.median(wall[name]) * 1e6, 1),
        }
        rows.append(row)
        spread = f"{row['added_min_us']:.0f}..{row['added_max_us']:.0f}"
        print(
            f"{name:<36} {row['cpu_us']:>9.1f} {row['added_us']:>9.1f} {spread:>17}"
            f" {row['wall_us']:>9.1f}"
        )
    added_by = {row["case"]: row["added_us"] for row in rows}
    ratio = None
    peer = added_by.get("OpenTelemetry CeleryInstrumentor")
    if peer is not None and peer > 0:
        ratio = round(added_by["obskit"] / peer, 3)
        print(f"obskit added CPU / OpenTelemetry CeleryInstrumentor added CPU: {ratio:.2f}x")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "celery.json").write_text(
        json.dumps({"rows": rows, "notes": notes, "added_ratio_vs_otel": ratio}, indent=2)
    )


if __name__ == "__main__":
    main()
