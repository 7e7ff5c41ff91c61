"""The profiler's cost and memory.

1. **Throughput**: one busy gunicorn sync worker serving ``e2e_app``'s hello route with
   obskit (``init()`` + ``instrument_flask``), pinned to CPU 0, loaded by ``wrk`` (16
   connections) pinned to CPU 1, with
   profiling off and on at 100 Hz (writing a pprof file every 15 s to a temporary
   directory), interleaved: each round runs both in a new order. Reports req/s, p50/p99
   and worker CPU per request, and the *paired* ratio on/off (the median over rounds of
   the ratio in the same round). Target: req/s with profiling >= 0.97x without.
2. **Memory**: a sampler (``max_stacks`` 10,000) fed 10,000, 20,000 and 50,000 distinct
   stacks: the memory its window holds (tracemalloc) stays flat past the limit, and the
   samples past it are counted under the overflow frame.

Run: ``python benchmarks/bench_profiles.py [rounds] [seconds]`` (default 5 rounds of 10 s).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_e2e
from bench_e2e import RESULTS, serve

CASES = ("profiling off", "profiling on (100 Hz)")


#: gunicorn (its master, the worker and the worker's threads) on CPU 0, ``wrk`` on CPU 1:
#: the load generator never takes the worker's core, as in a deployment where the
#: worker has its core and the clients are elsewhere.
_WORKER_CPU = ("taskset", "-c", "0")
_CLIENT_CPU = ("taskset", "-c", "1")


def load(url: str, seconds: int, master: int) -> dict[str, float]:
    """bench_e2e's ``wrk`` run, with ``wrk`` pinned to the other CPU."""
    original = bench_e2e.subprocess.run

    def pinned(command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command and command[0] == "wrk":
            command = [*_CLIENT_CPU, *command]
        return original(command, *args, **kwargs)

    bench_e2e.subprocess.run = pinned  # type: ignore[assignment]
    try:
        return bench_e2e.load(url, seconds, master)
    finally:
        bench_e2e.subprocess.run = original


def throughput(rounds: int, seconds: int) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="obskit-bench-profiles-")
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    paired: list[float] = []
    try:
        for _ in range(rounds):
            order = list(CASES)
            random.shuffle(order)
            this_round: dict[str, float] = {}
            for case in order:
                extra = {}
                if case != CASES[0]:
                    extra = {
                        "OBSKIT_PROFILES": "1",
                        "OBSKIT_PROFILE_HZ": "100",
                        "OBSKIT_PROFILE_DIR": directory,
                    }
                process, url = serve("1", workers=1, extra_env=extra, wrapper=_WORKER_CPU)
                try:
                    load(url, 2, process.pid)  # warm-up
                    result = load(url, seconds, process.pid)
                finally:
                    process.terminate()
                    process.wait(30)
                runs[case].append(result)
                this_round[case] = result["rps"]
            paired.append(this_round[CASES[1]] / this_round[CASES[0]])
        files = sorted(Path(directory).glob("*.pb.gz"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    summary = {
        case: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for case, results in runs.items()
    }
    return {
        "cases": summary,
        "paired_rps_ratio_on_off": statistics.median(paired),
        "paired_rps_ratios": paired,
        "profile_files_written": len(files),
        "target": ">= 0.97",
    }


def memory() -> dict[str, Any]:
    from obskit._profiles.sampler import Sampler

    found: dict[str, Any] = {}
    for distinct in (10_000, 20_000, 50_000):
        sampler = Sampler(hz=100, max_stacks=10_000)
        functions = []
        for n in range(distinct):
            namespace: dict[str, Any] = {"sampler": sampler}
            source = f"def leaf_{n}():\n    sampler.sample()\n"
            exec(compile(source, f"<stack {n}>", "exec"), namespace)
            functions.append(namespace[f"leaf_{n}"])
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for function in functions:
            function()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        window = sampler.take()
        found[f"{distinct} distinct stacks"] = {
            "window_bytes": held,
            "stacks_kept": len(window.counts),
            "samples_in_overflow": window.overflow,
        }
    return found


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    result = {"throughput": throughput(rounds, seconds), "memory": memory()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profiles.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
