"""What dumps cost while nothing is stuck: a Flask request and an ``@traced`` call with
dumps on (the registry of running spans, the dump thread with the ``stuck_after``
watchdog, the dump signal) against the same with ``dumps=False``.

Three measures, each case in the same run:

- **time**: the hello-world app of bench_flask.py driven in process, and a traced
  no-op function; the cases alternate round by round, each ``init()``-ed with its
  settings before its round (outside the timing). On a shared VM the difference is
  within the noise; the instruction count below is the figure to trust.

Spans are made and ended but go to no span processor (no export thread), so the only
difference between the cases is what dumps add.
- **the registry alone**: one ``init()`` with dumps on, the registry of running spans
  switched on and off round by round (in alternating order) in the same process: the
  most precise timing of the per-request cost;
- **instructions** (valgrind, when installed): a child process with dumps on, its
  registry switched off in one of the two cases, serves 200 warm-up requests, then
  ``requests`` more; the difference divided by ``requests`` is one request's count.
  Both cases run the same threads: under valgrind time runs some fifty times slower,
  so the dump thread's once-a-second check would otherwise be counted against fifty
  times fewer requests than it really serves;
- **the watchdog's check**: the time of one check with 100 spans running (it runs once
  a second, or every tenth of ``stuck_after`` when that is shorter).

Run: ``python benchmarks/bench_dumps.py [rounds] [requests]``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WARM_UP = 200
#: The settings of each case (everything else as deployed; spans not exported).
CASES: dict[str, dict[str, object]] = {
    "dumps off": {"dumps": False},
    "dumps on (registry, watchdog, signal)": {"dumps": True, "stuck_after": 30.0},
}
CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")


def _init(settings: dict[str, object]) -> None:
    # No span processor: obskit against itself, without an export thread whose batches
    # land in one run or the other by timing.
    import obskit

    obskit.init(service_name="bench", traces_exporter="none", log_format="json", **settings)


def _traced_timer() -> Callable[[int], float]:
    """Seconds per call of an ``@traced`` no-op, over ``calls`` calls (after ``_init``)."""
    import obskit

    @obskit.traced
    def work() -> int:
        return 1

    def traced(calls: int) -> float:
        started = perf_counter()
        for _ in range(calls):
            work()
        return (perf_counter() - started) / calls

    return traced


def timed(rounds: int, requests: int) -> dict[str, dict[str, float]]:
    """Median seconds per Flask request and per traced call, by case."""
    from _per_request import driver
    from bench_flask import hello_app

    import obskit

    _init({})
    app = obskit.instrument_flask(hello_app())
    flask = driver(app)

    traced = _traced_timer()

    samples: dict[str, dict[str, list[float]]] = {
        case: {"flask request": [], "@traced call": []} for case in CASES
    }
    measures: dict[str, Callable[[int], float]] = {"flask request": flask, "@traced call": traced}
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 - access lines
    try:
        for round_ in range(rounds + 1):
            for case, settings in CASES.items():
                _init(settings)
                for measure, run in measures.items():
                    calls = requests if measure == "flask request" else requests * 10
                    seconds = run(calls)
                    if round_:  # the first round warms up
                        samples[case][measure].append(seconds)
    finally:
        sys.stdout = real_stdout
        obskit.shutdown()
    return {
        case: {measure: statistics.median(values) for measure, values in measures_.items()}
        for case, measures_ in samples.items()
    }


def watchdog_check() -> float:
    """Median seconds of one watchdog check while 100 spans run (none stuck)."""
    import obskit
    from obskit._dumps import active_spans
    from obskit._dumps.watchdog import Watchdog

    _init(CASES["dumps on (registry, watchdog, signal)"])
    keys = [active_spans.enter(object(), "bench", perf_counter()) for _ in range(100)]
    dog = Watchdog(30.0)
    times = []
    for _ in range(200):
        started = perf_counter()
        dog.check()
        times.append(perf_counter() - started)
    for key in keys:
        active_spans.leave(key, None)
    obskit.shutdown()
    return statistics.median(times)


def registry_alone(rounds: int, requests: int) -> dict[bool, dict[str, float]]:
    """Median seconds per Flask request and per traced call with the registry on and
    off, in one process (nothing else changes between the rounds)."""
    from _per_request import driver
    from bench_flask import hello_app

    import obskit
    from obskit._dumps import active_spans

    _init(CASES["dumps on (registry, watchdog, signal)"])
    flask = driver(obskit.instrument_flask(hello_app()))

    traced = _traced_timer()

    samples: dict[bool, dict[str, list[float]]] = {
        on: {"flask request": [], "@traced call": []} for on in (False, True)
    }
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 - access lines
    try:
        flask(requests)
        for round_ in range(rounds * 2):
            for on in (True, False) if round_ % 2 else (False, True):
                active_spans.switch(on)
                samples[on]["flask request"].append(flask(requests))
                samples[on]["@traced call"].append(traced(requests * 10))
    finally:
        sys.stdout = real_stdout
        obskit.shutdown()
    return {
        on: {measure: statistics.median(values) for measure, values in by.items()}
        for on, by in samples.items()
    }


def child(case: str, measure: str, count: int) -> None:
    """In the process valgrind runs: dumps on, the registry off for ``case`` "dumps
    off"; ``measure`` (``flask``: requests to the Flask app; ``traced``: calls of a
    traced function) warmed up, then run ``count`` times."""
    sys.path.insert(0, str(HERE))
    from _per_request import driver
    from bench_flask import hello_app

    import obskit
    from obskit._dumps import active_spans

    _init(CASES["dumps on (registry, watchdog, signal)"])
    active_spans.switch(case != "dumps off")

    @obskit.traced
    def work() -> int:
        return 1

    def traced(calls: int) -> None:
        for _ in range(calls):
            work()

    run = driver(obskit.instrument_flask(hello_app())) if measure == "flask" else traced
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access lines, until exit
    run(WARM_UP)
    if count:
        run(count)


def instructions(case: str, measure: str, count: int) -> int:
    """Instructions the child executes in all (start-up, warm-up and ``count`` runs)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OBSKIT_METRICS_PORT": "0"}
    report = subprocess.run(
        [*CACHEGRIND, sys.executable, __file__, "--child", case, measure, str(count)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind for {case!r}:\n{report[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    sys.path.insert(0, str(HERE))
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    off, on = CASES
    medians = timed(rounds, requests)
    result: dict[str, object] = {"rounds": rounds, "requests": requests}
    print(f"time, {rounds} interleaved rounds (medians)")
    for measure in ("flask request", "@traced call"):
        before, after = medians[off][measure], medians[on][measure]
        print(
            f"{measure:<14} off {before * 1e6:8.2f} us  on {after * 1e6:8.2f} us"
            f"  on/off {after / before:.3f}"
        )
        result[f"time_{measure.replace(' ', '_').replace('@', '')}"] = {
            "off_us": round(before * 1e6, 3),
            "on_us": round(after * 1e6, 3),
            "ratio": round(after / before, 4),
        }
    alone = registry_alone(rounds, requests)
    print(f"the registry alone, switched on and off in one process, {rounds * 2} rounds")
    for measure in ("flask request", "@traced call"):
        before, after = alone[False][measure], alone[True][measure]
        print(
            f"{measure:<14} off {before * 1e6:8.2f} us  on {after * 1e6:8.2f} us"
            f"  on/off {after / before:.3f}"
        )
        result[f"registry_{measure.replace(' ', '_').replace('@', '')}"] = {
            "off_us": round(before * 1e6, 3),
            "on_us": round(after * 1e6, 3),
            "ratio": round(after / before, 4),
        }
    check = watchdog_check()
    print(f"one watchdog check with 100 spans running: {check * 1e6:.1f} us (once a second)")
    result["watchdog_check_us"] = round(check * 1e6, 2)
    if shutil.which("valgrind") is None:
        print("note: valgrind is not installed (apt-get install valgrind): no instruction count")
    else:
        jobs = [
            (case, measure, count)
            for case in CASES
            for measure in ("flask", "traced")
            for count in (0, requests)
        ]
        with ThreadPoolExecutor(2) as pool:  # valgrind runs one thread: two cores, two runs
            totals = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
        for measure, label in (("flask", "Flask request"), ("traced", "@traced call")):
            per = {
                case: (totals[case, measure, requests] - totals[case, measure, 0]) / requests
                for case in CASES
            }
            ratio = per[on] / per[off]
            print(
                f"instructions per {label} (valgrind, registry off/on):"
                f" {per[off]:,.0f} / {per[on]:,.0f}"
                f" ({per[on] - per[off]:+,.0f}, {ratio - 1:+.2%})"
            )
            result[f"instructions_per_{measure}"] = {
                "off": round(per[off]),
                "on": round(per[on]),
                "ratio": round(ratio, 4),
            }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dumps.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
