"""End to end: gunicorn (4 sync workers) serving a hello-world Flask route on 127.0.0.1,
loaded by ``wrk`` (Debian package ``wrk``), with and without obskit, interleaved.

Cases (all the same app, access log lines to /dev/null):

- ``bare``: no obskit;
- ``bare + gunicorn access log``: no obskit, gunicorn's own access log on
  (``--access-logfile -``): what a service without obskit usually runs, for reference
  (obskit's access line replaces it; the target compares with ``bare``);
- ``hand-wired``: the same per-request work written by hand with OpenTelemetry's SDK,
  prometheus-client and structlog through Flask's request hooks (``e2e_app.hand_wired``):
  the floor obskit is compared with elsewhere;
- ``obskit``: ``init()`` + ``instrument_flask`` in each worker, spans not exported
  (handed, as the hand-written floor's are, to a ``BatchSpanProcessor`` whose exporter
  drops them), each worker with its own metrics (the ``ratios`` in the JSON, as before);
- ``obskit multiprocess``: as documented for gunicorn (``from
  obskit.integrations.gunicorn import *`` in ``gunicorn.conf.py``): one ``/metrics``
  for all workers (the master's server process, on the metrics port), so every metric
  update is an mmap write plus the exemplar store;
- ``obskit multiprocess + OTLP``: the same, exporting every span over OTLP/HTTP to a
  local sink that answers 200 without decoding (a collector's cost is not counted;
  the workers' batching, serialising and sending is) -- what a real deployment runs.

Reports requests/s and p50/p99 latency (medians over rounds) and each case's ratios
to bare: of the medians, and *paired* (the median over rounds of the ratio to bare in
the same round, which cancels the machine's slower and faster stretches: this VM's
speed drifts by tens of percent over a minute). Each round runs the cases in a new
order. Load is bounded: ``rounds`` x cases runs of ``seconds`` each, 16 connections.
Run: ``python benchmarks/bench_e2e.py [rounds] [seconds]``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that reads each export and answers 200 (empty response)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


_made: list[Path] = []  # temporary config directories, removed at the end


def otlp_sink() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(
    instrument: str,
    multiprocess: bool = False,
    endpoint: str | None = None,
    access_log: bool = False,
    *,
    workers: int = 4,
    wrapper: tuple[str, ...] = (),
    start_timeout: float = 30.0,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn serving ``e2e_app`` on a free port, once it answers: (process, url).

    ``wrapper``: a command the interpreter runs under (``bench_instructions.py``: valgrind,
    with ``start_timeout`` to match); the process is then the wrapper's.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["OBSKIT_BENCH_INSTRUMENT"] = instrument
    env["PYTHONPATH"] = str(ROOT)
    # obskit's /metrics port (nobody scrapes it here): a free one on 127.0.0.1, not 9464 on
    # every interface, where the cases running side by side would all want it.
    env["OBSKIT_METRICS_PORT"] = str(free_port())
    env["OBSKIT_METRICS_ADDR"] = "127.0.0.1"
    env.update(extra_env or {})
    config: list[str] = []
    if multiprocess:
        conf = Path(tempfile.mkdtemp(prefix="obskit-e2e-")) / "gunicorn.conf.py"
        _made.append(conf.parent)
        conf.write_text("from obskit.integrations.gunicorn import *  # noqa: F403\n")
        config = ["--config", str(conf)]
    if access_log:
        config += ["--access-logfile", "-"]
    if endpoint is not None:
        env["OBSKIT_BENCH_EXPORT"] = "1"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    process = subprocess.Popen(
        [
            *wrapper,
            # This interpreter as it was started: in a virtualenv its bin/python, which
            # finds the virtualenv's packages (the file it links to would not).
            sys.executable,
            "-m",
            "gunicorn",
            *config,
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(ROOT / "benchmarks"),
            "e2e_app:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/hello/world"
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=start_timeout / 10).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"gunicorn did not start ({instrument}, {' '.join(wrapper)})")


def worker_cpu_seconds(master: int) -> float:
    """User + system CPU seconds used so far by the gunicorn workers of ``master`` (not
    the /metrics server process obskit's hooks start beside them)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return 0.0
    for child in children:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"obskit._metrics.pod_server" in command:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def load(url: str, seconds: int, master: int) -> dict[str, float]:
    cpu_before = worker_cpu_seconds(master)
    output = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = worker_cpu_seconds(master) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        # Worker CPU per request: what the app costs, much less sensitive to other load
        # on the machine than req/s (1 / this is the capacity of a dedicated core).
        "cpu_us_per_request": cpu * 1e6 / max(requests, 1),
    }


def main() -> None:
    if shutil.which("wrk") is None:
        print("note: wrk is not installed (apt-get install wrk): end-to-end benchmark skipped")
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    sink = otlp_sink()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    variants = {
        "bare": {"instrument": "0"},
        "bare + gunicorn access log": {"instrument": "0", "access_log": True},
        "hand-wired": {"instrument": "floor"},
        "obskit": {"instrument": "1"},
        "obskit multiprocess": {"instrument": "1", "multiprocess": True},
        "obskit multiprocess + OTLP": {
            "instrument": "1",
            "multiprocess": True,
            "endpoint": endpoint,
        },
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    servers = {name: serve(**options) for name, options in variants.items()}  # type: ignore[arg-type]
    try:
        for process, url in servers.values():
            load(url, 2, process.pid)  # warm-up
        names = list(servers)
        for round_number in range(rounds):
            shift = round_number % len(names)  # each round starts with another case
            for name in names[shift:] + names[:shift]:
                process, url = servers[name]
                runs[name].append(load(url, seconds, process.pid))
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        sink.shutdown()
        for made in _made:
            shutil.rmtree(made, ignore_errors=True)
    summary = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    bare = summary["bare"]

    def paired(name: str, key: str) -> float:
        return statistics.median(
            own[key] / base[key] for own, base in zip(runs[name], runs["bare"], strict=True)
        )

    by_case = {
        name: {
            "rps": row["rps"] / bare["rps"],
            "p99": row["p99_ms"] / bare["p99_ms"],
            "cpu_per_request": row["cpu_us_per_request"] / bare["cpu_us_per_request"],
            "rps_paired": paired(name, "rps"),
            "p99_paired": paired(name, "p99_ms"),
            "cpu_per_request_paired": paired(name, "cpu_us_per_request"),
        }
        for name, row in summary.items()
        if name != "bare"
    }
    ratios = by_case["obskit"]
    print(f"gunicorn 4 sync workers, wrk 2 threads x 16 connections, {rounds} x {seconds} s each")
    print(
        f"{'case':<28} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu us/req':>10}"
        f" {'x req/s':>8} {'x p99':>6} {'x cpu':>6} {'paired: x req/s':>16} {'x p99':>6}"
    )
    one = dict.fromkeys(("rps", "p99", "cpu_per_request", "rps_paired", "p99_paired"), 1.0)
    for name, row in summary.items():
        ratio = by_case.get(name, one)
        print(
            f"{name:<28} {row['rps']:>8.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}"
            f" {row['cpu_us_per_request']:>10.0f} {ratio['rps']:>8.2f} {ratio['p99']:>6.2f}"
            f" {ratio['cpu_per_request']:>6.2f} {ratio['rps_paired']:>16.2f}"
            f" {ratio['p99_paired']:>6.2f}"
        )
    floor = summary["hand-wired"]
    print(
        f"obskit vs hand-wired: {summary['obskit']['rps'] / floor['rps']:.2f}x req/s,"
        f" {summary['obskit']['cpu_us_per_request'] / floor['cpu_us_per_request']:.2f}x CPU"
        " per request"
    )
    print("targets (#10): req/s >= 0.85x bare, p99 <= 1.2x bare")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "e2e.json").write_text(
        json.dumps(
            {"summary": summary, "ratios": ratios, "ratios_by_case": by_case, "runs": runs},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
