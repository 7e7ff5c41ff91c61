"""Does exporting spans stall requests? p99 of a one-worker gunicorn, export on and off.

Two gunicorn servers, each one sync worker serving ``e2e_app``'s hello route with
obskit, both pinned to core 0 (``taskset -c 0``) and run one at a time:

- ``discard``: spans made, batched and dropped in process (``traces_exporter="none"``
  plus a ``BatchSpanProcessor`` to an exporter that drops them, as in ``bench_e2e.py``);
- ``otlp``: every span exported over OTLP/HTTP to a local sink that reads each request
  and answers 200 without decoding it (``bench_e2e.otlp_sink``, in a process of its own);
- ``otlp unpaced``: the same with obskit's export pacing turned off (a ``sitecustomize``
  in the server patches ``obskit._traces.paced_export``): the export as it was before,
  each batch encoded in one go, for reference in the same run.

This script (the load generator) and the sink run on core 1. The load is paced, not
closed-loop: ``RATE`` requests per second in all from ``THREADS`` client threads, each
on its own schedule, one connection per request (a sync worker closes each), so a
stalled request does not slow the load down and hide the stall. At one span per
request, a 512-span batch fills every ~2.6 s at 200 req/s.

The worker has one core: while its export thread encodes a batch, a request thread
that returns from a blocking call waits for the GIL (up to the 5 ms switch interval at
each such call). The figure of merit is the ratio of the p99s, ``otlp`` to ``discard``
(target: at most 1.5).

Rounds alternate the cases, each leading in turn, forwards then backwards (this VM is
shared, and its speed drifts); each round's p99 is taken per case, and the report gives
the p50/p99 over all requests, the medians over rounds and the median of the per-round
ratios ("paired"). The machine's load average is printed before and after: on a busy
machine, read the paired ratio.

Run: ``python benchmarks/bench_export_stall.py [rounds] [seconds]`` (default 8 x 10 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_e2e import ROOT, serve, worker_cpu_seconds

RATE = 200  # requests per second, all client threads together
THREADS = 8
SERVER_CORE = "0"
CLIENT_CORE = 1
RESULTS = Path(__file__).parent / "results"
HERE = Path(__file__).parent
_made: list[Path] = []  # temporary directories, removed at the end


def _sink() -> tuple[subprocess.Popen[str], str]:
    """``bench_e2e.otlp_sink`` in a process of its own on the client's core: its reads
    must not take the load generator's GIL. Returns (process, endpoint)."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from bench_e2e import otlp_sink; s = otlp_sink();"
        "print(s.server_address[1], flush=True); time.sleep(1e6)"
    )
    process = subprocess.Popen(
        ["taskset", "-c", str(CLIENT_CORE), sys.executable, "-c", code, str(HERE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def paced(url: str, seconds: float, rate: float = RATE) -> tuple[list[float], int]:
    """``rate`` req/s for ``seconds`` from :data:`THREADS` threads, each request a new
    connection with a raw HTTP/1.0 GET: (latencies in seconds, failures)."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    gap = THREADS / rate
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        next_at = time.monotonic() + index * gap / THREADS
        n = index
        while next_at < deadline:
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at += gap
            request = f"GET /{path[: path.rfind('/')]}/{n} HTTP/1.0\r\n\r\n".encode()
            n += THREADS
            started = time.perf_counter()
            try:
                with socket.create_connection((host, int(port)), timeout=10) as connection:
                    connection.sendall(request)
                    head = connection.recv(65536)
                    while connection.recv(65536):
                        pass
                ok = head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            except OSError:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures[0] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, failures[0]


def _quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1e3


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _unpaced_site() -> str:
    """A directory with a ``sitecustomize`` that turns pacing off in the server (obskit's
    private module, patched here only): the export as it was before pacing."""
    site = Path(tempfile.mkdtemp(prefix="obskit-unpaced-"))
    _made.append(site)
    (site / "sitecustomize.py").write_text(
        "from obskit._traces import paced_export\n"
        "paced_export.Pacer.hurried = property(lambda self: True)\n"
    )
    return str(site)


def _figures(per_round: list[list[float]], failures: int, cpu: float) -> dict[str, float]:
    every = [value for latencies in per_round for value in latencies]
    return {
        "requests": len(every),
        "cpu_us_per_request": round(cpu * 1e6 / max(len(every), 1)),
        "failures": failures,
        "p50_ms": round(_quantile(every, 50), 2),
        "p99_ms": round(_quantile(every, 99), 2),
        "p999_ms": round(sorted(every)[int(len(every) * 0.999)] * 1e3, 2),
        "p50_ms_median_of_rounds": round(statistics.median(_quantile(r, 50) for r in per_round), 2),
        "p99_ms_median_of_rounds": round(statistics.median(_quantile(r, 99) for r in per_round), 2),
    }


def main() -> None:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("note: needs taskset and 2 cores: export stall benchmark skipped")
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    os.sched_setaffinity(0, {CLIENT_CORE})  # this process and the threads it starts
    load_before = _loadavg()
    sink, endpoint = _sink()
    pinned = ("taskset", "-c", SERVER_CORE)
    unpaced = {"PYTHONPATH": os.pathsep.join([_unpaced_site(), str(ROOT)])}
    servers = {}
    try:
        servers["discard"] = serve("1", workers=1, wrapper=pinned)
        servers["otlp"] = serve("1", endpoint=endpoint, workers=1, wrapper=pinned)
        servers["otlp unpaced"] = serve(
            "1", endpoint=endpoint, workers=1, wrapper=pinned, extra_env=unpaced
        )
        for _, url in servers.values():  # warm-up, and a first batch exported
            paced(url, 3.0)
        names = list(servers)
        runs: dict[str, list[list[float]]] = {name: [] for name in names}
        failures = dict.fromkeys(names, 0)
        cpu = dict.fromkeys(names, 0.0)  # the worker's CPU seconds (export included)
        for number in range(rounds):
            # Each case leads in turn, forwards then backwards (ABC CBA BCA ACB ...).
            shift = (number // 2) % len(names)
            order = names[shift:] + names[:shift]
            for name in order if number % 2 == 0 else order[::-1]:
                process, url = servers[name]
                cpu_before = worker_cpu_seconds(process.pid)
                latencies, failed = paced(url, seconds)
                cpu[name] += worker_cpu_seconds(process.pid) - cpu_before
                runs[name].append(latencies)
                failures[name] += failed
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sink.kill()
        sink.wait()
        for made in _made:
            shutil.rmtree(made, ignore_errors=True)
    load_after = _loadavg()
    figures = {
        name: _figures(per_round, failures[name], cpu[name]) for name, per_round in runs.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for name in ("otlp", "otlp unpaced"):
        paired = statistics.median(
            _quantile(own, 99) / _quantile(discard, 99)
            for own, discard in zip(runs[name], runs["discard"], strict=True)
        )
        ratios[name] = {
            "p99_ratio_all_requests": round(
                figures[name]["p99_ms"] / figures["discard"]["p99_ms"], 3
            ),
            "p99_ratio_median_of_rounds": round(paired, 3),
        }
    print(
        f"gunicorn 1 sync worker on core {SERVER_CORE}, load on core {CLIENT_CORE}:"
        f" ~{RATE} req/s from {THREADS} threads, {rounds} x {seconds:g} s per case"
    )
    print(f"load average before: {load_before}; after: {load_after}")
    print(
        f"{'case':<13} {'requests':>8} {'fail':>4} {'cpu us':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'p99.9':>7}"
        f" {'x p99':>6} {'paired x p99':>12}  median of rounds: p50, p99"
    )
    for name, row in figures.items():
        ratio = ratios.get(name, {})
        print(
            f"{name:<13} {row['requests']:>8.0f} {row['failures']:>4.0f}"
            f" {row['cpu_us_per_request']:>6.0f} {row['p50_ms']:>7.2f}"
            f" {row['p99_ms']:>7.2f} {row['p999_ms']:>7.2f}"
            f" {ratio.get('p99_ratio_all_requests', 1.0):>6.2f}"
            f" {ratio.get('p99_ratio_median_of_rounds', 1.0):>12.2f}"
            f"  {row['p50_ms_median_of_rounds']:.2f}, {row['p99_ms_median_of_rounds']:.2f}"
        )
    for name, per_round in runs.items():
        print(
            f"{name} p99 per round (ms): " + " ".join(f"{_quantile(r, 99):.1f}" for r in per_round)
        )
    print("target: otlp p99 <= 1.5x discard p99 (paired: the median of the per-round ratios)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_stall.json").write_text(
        json.dumps(
            {
                "figures": figures,
                "ratios": ratios,
                "load_before": load_before,
                "load_after": load_after,
                "runs_p99_ms": {
                    name: [round(_quantile(r, 99), 2) for r in per_round]
                    for name, per_round in runs.items()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
