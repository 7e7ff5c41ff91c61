"""End to end: gunicorn (4 sync workers) serving a hello-world Flask route on 127.0.0.1,
loaded by ``wrk`` (Debian package ``wrk``), with and without obskit, interleaved.

Reports requests/s and p50/p99 latency (medians over rounds) and the ratios
obskit/bare. Load is bounded: ``rounds`` x 2 runs of ``seconds`` each, 16 connections.
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
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(instrument: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env["OBSKIT_BENCH_INSTRUMENT"] = "1" if instrument else "0"
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "4",
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def load(url: str, seconds: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50_ms": percentile("50"), "p99_ms": percentile("99")}


def main() -> None:
    if shutil.which("wrk") is None:
        print("note: wrk is not installed (apt-get install wrk): end-to-end benchmark skipped")
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "obskit": []}
    servers = {name: serve(name == "obskit") for name in runs}
    try:
        for _process, url in servers.values():
            load(url, 2)  # warm-up
        for _ in range(rounds):
            for name, (_, url) in servers.items():
                runs[name].append(load(url, seconds))
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    summary = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    ratios = {
        "rps": summary["obskit"]["rps"] / summary["bare"]["rps"],
        "p99": summary["obskit"]["p99_ms"] / summary["bare"]["p99_ms"],
    }
    print(f"gunicorn 4 sync workers, wrk 2 threads x 16 connections, {rounds} x {seconds} s each")
    print(f"{'case':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in summary.items():
        print(f"{name:<10} {row['rps']:>10.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    print(f"obskit/bare: req/s {ratios['rps']:.2f}x, p99 {ratios['p99']:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps({"summary": summary, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
