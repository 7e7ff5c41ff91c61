"""Whole-process import cost: `import obskit` and `import obskit; obskit.init()` against
importing obskit's dependencies alone, median of interleaved process runs. ``init()``
runs with its defaults, starting the ``/metrics`` server included (on a free port of
127.0.0.1 rather than 9464 on every interface).

Run: ``python benchmarks/bench_import.py [runs]``. Prints a table of medians, the
min-max spread and the ratio to the floor (the dependencies alone), measured in
the same run.
"""

from __future__ import annotations

import compileall
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "python -c pass (interpreter)": "pass",
    "floor: import otel sdk, prometheus_client, structlog, wrapt": (
        "import opentelemetry.sdk.trace, prometheus_client, structlog, wrapt"
    ),
    "import obskit": "import obskit",
    "import obskit; obskit.init()": "import obskit; obskit.init(traces_exporter='none')",
}
FLOOR = "floor: import otel sdk, prometheus_client, structlog, wrapt"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _time(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - started


def precompile() -> str:
    """Byte-compile obskit, as installing a wheel does, so it loads like the dependencies.

    The dependencies come with their ``.pyc`` files; a source checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` (as in CI) would otherwise compile every obskit
    module from source in every process, which no installed deployment does.
    """
    package = Path(__file__).resolve().parents[1] / "obskit"
    compileall.compile_dir(str(package), quiet=1)
    return f"note: obskit byte-compiled first ({package}), as a wheel install does"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env["OBSKIT_METRICS_PORT"] = str(_free_port())
    env["OBSKIT_METRICS_ADDR"] = "127.0.0.1"
    note = precompile()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for code in CASES.values():  # warm the file cache once
        _time(code, env)
    for _ in range(runs):
        for name, code in CASES.items():  # interleaved, so drift hits every case alike
            samples[name].append(_time(code, env))
    floor = statistics.median(samples[FLOOR])
    print(f"{'case':<62} {'median ms':>10} {'min-max ms':>15} {'x floor':>8}")
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}"
        print(f"{name:<62} {median * 1e3:>10.1f} {spread:>15} {median / floor:>8.2f}")
        rows.append(
            {"case": name, "median_ms": round(median * 1e3, 1), "x_floor": round(median / floor, 3)}
        )
    print(note)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "import.json").write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
