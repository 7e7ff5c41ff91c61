"""Machine instructions per Flask request, counted by valgrind: a measure without noise.

Timings on a shared VM drift by tens of percent within a minute; the instructions a
request executes do not. Each case runs in a child process under ``valgrind
--tool=cachegrind`` (Debian package ``valgrind``) twice, with 200 warm-up requests
and then with and without ``requests`` more, the same hash seed each time; the
difference divided by ``requests`` is the cost of one request, the same to a few
hundred instructions run after run.

Cases (the hello-world app of bench_flask.py, driven in process as there):

- ``bare Flask``;
- ``hand-wired``: the end-to-end benchmark's floor, the same per-request work written
  with OpenTelemetry's SDK, prometheus-client and structlog (``e2e_app.hand_wired``);
- ``obskit``: ``init()`` + ``instrument_flask``, spans not exported.

In both cases with spans they go through a ``BatchSpanProcessor`` to an exporter that
drops them (``_floor.discard_spans``), as in the end-to-end benchmark.

The same count through a real server: one gunicorn sync worker serving the
end-to-end benchmark's app (``e2e_app``, bare and with obskit) on 127.0.0.1 under
valgrind, sent ``requests`` real HTTP requests one at a time after the warm-up; the
worker's instructions with and without them, divided by ``requests``. It adds what
gunicorn itself does per request (parsing, the socket, the environ), so
``bare / obskit`` is the req/s ratio the end-to-end benchmark would measure if every
instruction cost the same time.

What it predicts: in the gunicorn end-to-end benchmark the workers are CPU-bound, so
req/s with obskit over bare is about ``1 / (1 + k * added)``, ``added`` being obskit's
instructions over bare Flask's; docs/performance.md has ``k`` as measured here.
Run: ``python benchmarks/bench_instructions.py [requests]``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CASES = ("bare Flask", "hand-wired", "obskit")
WARM_UP = 200


def child(case: str, requests: int) -> None:
    """In the process valgrind runs: build the case's app, warm it up, then serve."""
    sys.path.insert(0, str(HERE))
    from _per_request import driver
    from bench_flask import hello_app

    app = hello_app()
    if case == "obskit":
        from _floor import discard_spans

        import obskit

        handle = obskit.init(service_name="bench", traces_exporter="none", log_format="json")
        assert handle.tracer_provider is not None
        discard_spans(handle.tracer_provider)
        obskit.instrument_flask(app)
    elif case == "hand-wired":
        from e2e_app import hand_wired

        hand_wired(app)
    run = driver(app)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access lines, until exit
    run(WARM_UP)
    if requests:
        run(requests)


#: valgrind counting instructions only: no cache simulation, no output file.
CACHEGRIND = (
    "valgrind",
    "--tool=cachegrind",
    "--cache-sim=no",
    "--cachegrind-out-file=/dev/null",
)


def _refs(report: str) -> int | None:
    """The instruction total ("I refs") of a cachegrind report, if it has one."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    return int(found.group(1).replace(",", "")) if found is not None else None


def instructions(case: str, requests: int) -> int:
    """Instructions the child executes in all (start-up, warm-up and ``requests``)."""
    # No /metrics server: its threads' wake-ups would add instructions no request runs.
    env = {**os.environ, "PYTHONHASHSEED": "0", "OBSKIT_METRICS_PORT": "0"}
    output = subprocess.run(
        # sys.executable as started (a virtualenv's bin/python finds its packages; valgrind
        # runs it like any other program).
        [*CACHEGRIND, sys.executable, __file__, "--child", case, str(requests)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    count = _refs(output)
    if count is None:
        raise RuntimeError(f"no instruction count from valgrind for {case!r}:\n{output[-2000:]}")
    return count


def gunicorn_instructions(instrument: str, requests: int) -> int:
    """Instructions of one gunicorn sync worker (``e2e_app``, ``OBSKIT_BENCH_INSTRUMENT``
    = ``instrument``) from its fork to its exit, having served the readiness request,
    WARM_UP requests and then ``requests`` more, each over its own connection."""
    from bench_e2e import serve

    logs = Path(tempfile.mkdtemp(prefix="obskit-vg-"))
    try:
        master, url = serve(
            instrument,
            workers=1,
            wrapper=(*CACHEGRIND, f"--log-file={logs}/vg.%p"),
            start_timeout=300,  # gunicorn starts slowly under valgrind
            # No /metrics server: its threads' wake-ups would add instructions no request runs.
            extra_env={"PYTHONHASHSEED": "0", "OBSKIT_METRICS_PORT": "0"},
        )
        try:
            for _ in range(WARM_UP + requests):
                urllib.request.urlopen(url, timeout=30).read()
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(timeout=300)
        for log in logs.iterdir():  # the master's and the worker's: the worker's parent is it
            text = log.read_text()
            count = _refs(text) if f"Parent PID: {master.pid}" in text else None
            if count is not None:
                return count
        raise RuntimeError(f"no instruction count from the gunicorn worker ({instrument})")
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def main() -> None:
    if shutil.which("valgrind") is None:
        print("note: valgrind is not installed (apt-get install valgrind): benchmark skipped")
        return
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    jobs = [(case, count) for case in CASES for count in (0, requests)]
    served = [(instrument, count) for instrument in ("0", "1") for count in (0, requests)]
    with ThreadPoolExecutor(2) as pool:  # valgrind runs one thread: two cores, two runs
        totals = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
        worker = dict(
            zip(served, pool.map(lambda job: gunicorn_instructions(*job), served), strict=True)
        )
    per_request = {case: (totals[case, requests] - totals[case, 0]) / requests for case in CASES}
    bare = per_request["bare Flask"]
    print(f"instructions per Flask request (valgrind), {requests} requests after {WARM_UP}")
    print(f"{'case':<12} {'per request':>12} {'added':>9} {'x bare':>7}")
    for case, count in per_request.items():
        print(f"{case:<12} {count:>12,.0f} {count - bare:>9,.0f} {count / bare:>7.2f}")
    added = {case: per_request[case] - bare for case in CASES}
    ratio = added["obskit"] / added["hand-wired"]
    print(f"obskit added / hand-wired added: {ratio:.2f}x")
    through = {
        case: (worker[instrument, requests] - worker[instrument, 0]) / requests
        for case, instrument in (("bare", "0"), ("obskit", "1"))
    }
    equal_cost = through["bare"] / through["obskit"]
    print(
        f"through one gunicorn sync worker (real HTTP): bare Flask {through['bare']:,.0f},"
        f" obskit {through['obskit']:,.0f} (+{through['obskit'] - through['bare']:,.0f},"
        f" {through['obskit'] / through['bare'] - 1:+.1%}); req/s ratio if every"
        f" instruction cost the same: {equal_cost:.3f}x"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "instructions.json").write_text(
        json.dumps(
            {
                "requests": requests,
                "per_request": {case: round(count) for case, count in per_request.items()},
                "added": {case: round(count) for case, count in added.items()},
                "obskit_added_x_hand_wired_added": round(ratio, 3),
                "gunicorn_worker_per_request": {
                    case: round(count) for case, count in through.items()
                },
                "gunicorn_equal_cost_rps_ratio": round(equal_cost, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
