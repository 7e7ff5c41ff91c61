"""Cost per log line when stdout is a real pipe, read by another process.

``bench_logs.py`` writes to /dev/null (a character device: obskit writes it through
``sys.stdout``). In a container stdout is a pipe, which obskit writes through its own
non-blocking descriptor and, when the reader falls behind, an in-process buffer. This
script measures that path, in a child whose stdout is a pipe to a reader process:

- ``drained``: the reader takes everything at once (``cat > /dev/null``); cases
  interleaved round by round: stdlib plain line and the hand-written structlog floor
  (both blocking writes through ``sys.stdout``), ``obskit.get_logger().info`` and a
  ``logging`` record through obskit's bridge;
- ``paused``: the reader takes 64 KiB, then pauses 300 ms (a log shipper under
  back-pressure); one burst of obskit lines that fits the buffer (what the caller pays
  while lines are buffered; the floor would block here, so it is not run).

Run: ``python benchmarks/bench_log_pipe.py [rounds] [calls]``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

READER = """
import os, sys, time
paused = sys.argv[1] == "paused"
taken = 0
while True:
    chunk = os.read(0, 65536 - taken if paused else 1 << 20)
    if not chunk:
        break
    taken += len(chunk)
    if paused and taken >= 65536:
        taken = 0
        time.sleep(0.3)
"""


def child(mode: str, rounds: int, calls: int, out: str) -> None:
    """Runs in the process whose stdout is the pipe; writes its figures to ``out``."""
    import structlog

    import obskit

    sys.path.insert(0, str(Path(__file__).parent))
    from _rounds import Case, interleaved, timed
    from bench_logs import floor_logger, stdlib_plain_logger

    obskit.init(service_name="bench", log_format="json", traces_exporter="none")
    from opentelemetry import trace

    ours = obskit.get_logger("bench.obskit")
    samples: dict[str, list[float]] = {}
    with trace.get_tracer("bench").start_as_current_span("request"):
        if mode == "paused":
            # ~250-byte lines: rounds * calls of them must fit obskit's 4 MiB buffer.
            run = timed(lambda: ours.info("order placed", items=3, note="x" * 80))
            samples["obskit.get_logger().info (buffering)"] = [run(calls) for _ in range(rounds)]
        else:
            cases: dict[str, Case] = {
                "stdlib plain line (logging.Formatter)": timed(
                    lambda: plain.info("order placed %s", 3)
                ),
                "floor: hand-written structlog": timed(lambda: floor.info("order placed", items=3)),
                "obskit.get_logger().info": timed(lambda: ours.info("order placed", items=3)),
                "logging via obskit bridge": timed(
                    lambda: bridged.info("order placed", extra={"items": 3})
                ),
            }
            plain = stdlib_plain_logger(sys.stdout)
            floor = floor_logger(sys.stdout)
            bridged = logging.getLogger("bench.bridged")
            samples = interleaved(cases, rounds, calls)
    structlog.reset_defaults()
    Path(out).write_text(json.dumps(samples))
    obskit.shutdown(timeout=60)


def measure(mode: str, rounds: int, calls: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "samples.json")
        reader = subprocess.Popen([sys.executable, "-c", READER, mode], stdin=subprocess.PIPE)
        assert reader.stdin is not None
        try:
            subprocess.run(
                [sys.executable, __file__, "--child", mode, str(rounds), str(calls), out],
                stdout=reader.stdin,
                check=True,
                timeout=600,
            )
        finally:
            reader.stdin.close()
            reader.wait(timeout=600)
        samples: dict[str, list[float]] = json.loads(Path(out).read_text())
        return samples


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    drained = measure("drained", rounds, calls)
    paused = measure("paused", 10, 1000)
    floor = statistics.median(drained["floor: hand-written structlog"])
    print(
        f"per log line inside a span, JSON to a pipe read by another process ({rounds} x {calls})"
    )
    print(f"{'case':<42} {'median us':>10} {'min-max us':>14} {'x floor':>8}")
    rows = []
    for name, values in {**drained, **paused}.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e6:.2f}-{max(values) * 1e6:.2f}"
        print(f"{name:<42} {median * 1e6:>10.2f} {spread:>14} {median / floor:>8.2f}")
        rows.append(
            {
                "case": name,
                "median_us": round(median * 1e6, 3),
                "min_us": round(min(values) * 1e6, 3),
                "max_us": round(max(values) * 1e6, 3),
                "x_floor": round(median / floor, 3),
            }
        )
    print("paused: the reader takes 64 KiB per 300 ms; 10 x 1000 lines go to the buffer")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "log_pipe.json").write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
