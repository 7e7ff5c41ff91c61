"""Cost per outgoing HTTP call (requests, httpx) added by obskit and by OpenTelemetry's
contrib instrumentations, sampled and unsampled.

A keep-alive HTTP/1.1 server runs on 127.0.0.1 in a child process (so it does not take
the client's GIL); each library calls it through one reused ``requests.Session`` /
``httpx.Client``. Cases, interleaved round by round in one process:

- bare: no instrumentation at all (obskit's wrappers taken off the library's classes,
  contrib's not installed);
- contrib: ``RequestsInstrumentor`` / ``HTTPXClientInstrumentor`` (OpenTelemetry's), with
  no meter provider set, so its duration histogram is a no-op (obskit's is not: a
  comparison in contrib's favour);
- obskit: its instrumentation as ``init()`` installs it (CLIENT span, propagation
  headers, ``http_client_request_duration_seconds`` with exemplar);
- each of contrib and obskit inside a *sampled* trace (a recording parent span, as in a
  request handler) and inside an *unsampled* one (a remote parent with the sampled flag
  off: obskit still sends the trace id in ``traceparent``).

Every span goes to obskit's provider, whose ended spans go through a
``BatchSpanProcessor`` to an exporter that drops them (``_floor.discard_spans``). The
added cost of a case is its median minus the bare median; the targets are
``obskit / contrib <= 0.5`` (sampled) and ``unsampled / sampled <= 0.2`` (obskit). The
paired figures divide the added costs measured in the same round (a load spike on a
shared machine hits both or neither).

contrib's instrumentations are optional: install them in a separate virtualenv at the
versions matching the installed SDK (pip otherwise downgrades ``opentelemetry-api``)::

    python -m venv /tmp/venv-bench-http
    printf 'opentelemetry-api==%s\\nopentelemetry-sdk==%s\\n' 1.45.2 1.45.2 > constraints.txt
    /tmp/venv-bench-http/bin/pip install -c constraints.txt opentelemetry-sdk structlog \\
        prometheus-client wrapt requests httpx \\
        opentelemetry-instrumentation-requests opentelemetry-instrumentation-httpx
    PYTHONPATH=. /tmp/venv-bench-http/bin/python benchmarks/bench_http_clients.py

Timings on a shared machine drift by tens of percent within a minute, more than the
few microseconds compared here. ``--instructions`` counts instead, with valgrind (Debian
package ``valgrind``): each case in a child process run twice, with ``WARM_UP`` calls
and with ``calls`` more; the difference divided by ``calls`` is one call's
instructions, the same run after run (the client's only: the server is not counted).

Run: ``python benchmarks/bench_http_clients.py [rounds] [calls]`` (CPU time of the
client process per call; prints a table, writes ``benchmarks/results/http_clients.json``
and ``.md``) or ``python benchmarks/bench_http_clients.py --instructions [calls]``
(writes ``benchmarks/results/http_clients_instructions.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from time import process_time
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import obskit

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans
from _rounds import interleaved

RESULTS = Path(__file__).parent / "results"

SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok"

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.wfile.write(ANSWER)  # one write: no wait for a delayed ACK between two

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def local_server() -> Iterator[str]:
    """The keep-alive server in a child process; its base URL."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        child.kill()
        child.wait(timeout=10)


def unsampled_context() -> context.Context:
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(0),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


class Patches:
    """obskit's wrappers on a library's classes, which a case takes off or puts back."""

    def __init__(self, methods: list[tuple[type, str]]) -> None:
        self.wrapped = {(kind, name): kind.__dict__[name] for kind, name in methods}
        for wrapper in self.wrapped.values():
            assert hasattr(wrapper, "__wrapped__"), "obskit did not patch the library"

    def off(self) -> None:
        for (kind, name), wrapper in self.wrapped.items():
            setattr(kind, name, wrapper.__wrapped__)

    def on(self) -> None:
        for (kind, name), wrapper in self.wrapped.items():
            setattr(kind, name, wrapper)


def case(
    call: Callable[[], Any],
    patches: Patches,
    obskit_on: bool,
    instrumentor: Any = None,
    parent: str | None = None,
) -> Callable[[int], float]:
    """``call`` in a loop with obskit's patches on or off, contrib's ``instrumentor``
    installed for the run if given, inside a sampled or unsampled parent (or none)."""
    tracer = trace.get_tracer("bench")

    def run(calls: int) -> float:
        (patches.on if obskit_on else patches.off)()
        if instrumentor is not None:
            instrumentor.instrument()
        try:
            if parent == "sampled":
                span = tracer.start_span("parent")
                token = context.attach(trace.set_span_in_context(span))
            elif parent == "unsampled":
                span = None
                token = context.attach(unsampled_context())
            else:
                span = token = None
            try:
                started = process_time()
                for _ in range(calls):
                    call()
                return (process_time() - started) / calls
            finally:
                if token is not None:
                    context.detach(token)
                if span is not None:
                    span.end()
        finally:
            if instrumentor is not None:
                instrumentor.uninstrument()
            patches.on()

    return run


def library_setup(library: str, url: str, notes: list[str]) -> tuple[Any, Patches, Any, Any]:
    """(one call of ``library`` to ``url``, obskit's patches, contrib's instrumentor or
    None, the client to close) for ``library``, "requests" or "httpx"."""
    if library == "requests":
        import requests
        import requests.adapters
        import urllib3

        client: Any = requests.Session()
        patches = Patches(
            [
                (requests.Session, "send"),
                (requests.adapters.HTTPAdapter, "send"),
                (urllib3.HTTPConnectionPool, "urlopen"),
            ]
        )
        try:
            from opentelemetry.instrumentation.requests import RequestsInstrumentor

            contrib: Any = RequestsInstrumentor()
        except ImportError:
            contrib = None
            notes.append("opentelemetry-instrumentation-requests not installed: contrib skipped")
    else:
        import httpx

        client = httpx.Client()
        patches = Patches([(httpx.Client, "send"), (httpx.HTTPTransport, "handle_request")])
        try:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            contrib = HTTPXClientInstrumentor()
        except ImportError:
            contrib = None
            notes.append("opentelemetry-instrumentation-httpx not installed: contrib skipped")

    def call() -> None:
        client.get(url).close()

    return call, patches, contrib, client


#: The cases of each library: (name, obskit on, contrib on, parent).
CASES = (
    ("bare", False, False, "sampled"),
    ("contrib, sampled", False, True, "sampled"),
    ("obskit, sampled", True, False, "sampled"),
    ("contrib, unsampled", False, True, "unsampled"),
    ("obskit, unsampled", True, False, "unsampled"),
)


def library_cases(
    library: str, url: str, notes: list[str]
) -> tuple[dict[str, Callable[[int], float]], Any]:
    """The cases of ``library`` ("requests" or "httpx") and the client to close."""
    call, patches, contrib, client = library_setup(library, url, notes)
    cases = {}
    for name, obskit_on, contrib_on, parent in CASES:
        if contrib_on and contrib is None:
            continue
        instrumentor = contrib if contrib_on else None
        cases[f"{library}: {name}"] = case(call, patches, obskit_on, instrumentor, parent)
    return cases, client


#: Calls made before the counted ones, in each child counted by valgrind.
WARM_UP = 100
#: valgrind counting instructions only: no cache simulation, no output file.
CACHEGRIND = (
    "valgrind",
    "--tool=cachegrind",
    "--cache-sim=no",
    "--cachegrind-out-file=/dev/null",
)


def child(library: str, name: str, calls: int, url: str) -> None:
    """In the process valgrind runs: one case, ``WARM_UP`` then ``calls`` calls."""
    handle = obskit.init(
        service_name="bench", traces_exporter="none", log_level="warning", metrics_port=0
    )
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)
    run_call, patches, contrib, client = library_setup(library, url, [])
    (_, obskit_on, contrib_on, parent) = next(c for c in CASES if c[0] == name)
    if contrib_on and contrib is None:
        raise SystemExit(3)
    run = case(run_call, patches, obskit_on, contrib if contrib_on else None, parent)
    run(WARM_UP)
    if calls:
        run(calls)
    client.close()
    obskit.shutdown()


def instructions(library: str, name: str, calls: int, url: str) -> int | None:
    """Instructions the child of one case executes in all (None: contrib not installed)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [*CACHEGRIND, sys.executable, __file__, "--child", library, name, str(calls), url],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1800,
    )
    if result.returncode == 3:
        return None
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind gave no count for {library} {name}:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count_instructions(calls: int) -> None:
    """Instructions per call of each case, counted by valgrind (run with and without
    ``calls`` more calls, the difference divided by ``calls``): a measure without the
    noise of a shared machine; the ratios as in the timed run."""
    if shutil.which("valgrind") is None:
        print("note: valgrind not installed (Debian package valgrind): instructions skipped")
        return
    jobs = [
        (lib, name, n) for lib in ("requests", "httpx") for name, *_ in CASES for n in (0, calls)
    ]
    with local_server() as base, ThreadPoolExecutor(2) as pool:
        counts = dict(
            zip(
                jobs,
                pool.map(lambda job: instructions(job[0], job[1], job[2], f"{base}/ok"), jobs),
                strict=True,
            )
        )
    per_call: dict[str, float] = {}
    for library in ("requests", "httpx"):
        for name, *_ in CASES:
            low, high = counts[(library, name, 0)], counts[(library, name, calls)]
            if low is not None and high is not None:
                per_call[f"{library}: {name}"] = (high - low) / calls
    rows = []
    ratios: dict[str, float] = {}
    for library in ("requests", "httpx"):
        bare = per_call[f"{library}: bare"]
        added = {
            name: per_call[f"{library}: {name}"] - bare
            for name, *_ in CASES
            if f"{library}: {name}" in per_call
        }
        for name, extra in added.items():
            rows.append(
                {
                    "case": f"{library}: {name}",
                    "instructions": round(per_call[f"{library}: {name}"]),
                    "added": round(extra),
                }
            )
        ratios[f"{library}_unsampled_x_sampled"] = (
            added["obskit, unsampled"] / added["obskit, sampled"]
        )
        if "contrib, sampled" in added:
            ratios[f"{library}_obskit_x_contrib"] = (
                added["obskit, sampled"] / added["contrib, sampled"]
            )
            ratios[f"{library}_unsampled_obskit_x_contrib"] = (
                added["obskit, unsampled"] / added["contrib, unsampled"]
            )
    print(f"instructions per call (valgrind), {calls} calls after {WARM_UP}:")
    print(f"{'case':<34} {'instructions':>13} {'added':>9}")
    for row in rows:
        print(f"{row['case']:<34} {row['instructions']:>13} {row['added']:>9}")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_clients_instructions.json").write_text(
        json.dumps(
            {"calls": calls, "rows": rows, "ratios": {k: round(v, 3) for k, v in ratios.items()}},
            indent=2,
        )
    )


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    handle = obskit.init(
        service_name="bench",
        traces_exporter="none",
        log_format="json",
        log_level="warning",
        metrics_port=0,
    )
    assert handle.tracer_provider is not None
    discard_spans(handle.tracer_provider)  # contrib's spans come from it too
    notes: list[str] = []
    with local_server() as base:
        cases: dict[str, Callable[[int], float]] = {}
        clients = []
        for library in ("requests", "httpx"):
            more, client = library_cases(library, f"{base}/ok", notes)
            cases.update(more)
            clients.append(client)
        samples = interleaved(cases, rounds, calls)
        for client in clients:
            client.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows = []
    for name, values in samples.items():
        bare = medians[name.split(":")[0] + ": bare"]
        rows.append(
            {
                "case": name,
                "median_us": round(medians[name] * 1e6, 2),
                "min_us": round(min(values) * 1e6, 2),
                "max_us": round(max(values) * 1e6, 2),
                "added_us": round((medians[name] - bare) * 1e6, 2),
            }
        )

    def added(name: str) -> float:
        return medians[name] - medians[name.split(":")[0] + ": bare"]

    def paired(case_name: str, reference: str) -> float:
        library = case_name.split(":")[0]
        bare = samples[f"{library}: bare"]
        return statistics.median(
            (c - b) / (r - b)
            for c, r, b in zip(samples[case_name], samples[reference], bare, strict=True)
        )

    ratios: dict[str, float] = {}
    ratios_paired: dict[str, float] = {}
    for library in ("requests", "httpx"):
        targets = {
            f"{library}_unsampled_x_sampled": (
                f"{library}: obskit, unsampled",
                f"{library}: obskit, sampled",
            ),
        }
        if f"{library}: contrib, sampled" in samples:
            targets[f"{library}_obskit_x_contrib"] = (
                f"{library}: obskit, sampled",
                f"{library}: contrib, sampled",
            )
            targets[f"{library}_unsampled_obskit_x_contrib"] = (
                f"{library}: obskit, unsampled",
                f"{library}: contrib, unsampled",
            )
        for key, (case_name, reference) in targets.items():
            ratios[key] = added(case_name) / added(reference)
            ratios_paired[key] = paired(case_name, reference)
    print(
        f"per call, {rounds} interleaved rounds x {calls} calls (medians) to a keep-alive"
        " server on 127.0.0.1; spans to a BatchSpanProcessor with a discarding exporter"
    )
    print(f"{'case':<34} {'median us':>10} {'min-max us':>16} {'added us':>9}")
    for row in rows:
        spread = f"{row['min_us']:.1f}-{row['max_us']:.1f}"
        print(f"{row['case']:<34} {row['median_us']:>10.1f} {spread:>16} {row['added_us']:>9.2f}")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f} (paired per round: {ratios_paired[key]:.3f})")
    for note in notes:
        print(f"note: {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_clients.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "ratios": {key: round(value, 3) for key, value in ratios.items()},
                "ratios_paired": {key: round(value, 3) for key, value in ratios_paired.items()},
                "targets": {"obskit_x_contrib": 0.5, "unsampled_x_sampled": 0.2},
                "notes": notes,
            },
            indent=2,
        )
    )
    table = ["| case | median us | min-max us | added us |", "|---|---|---|---|"]
    table += [
        f"| {r['case']} | {r['median_us']:.1f} | {r['min_us']:.1f}-{r['max_us']:.1f} | "
        f"{r['added_us']:.2f} |"
        for r in rows
    ]
    table += ["", "| ratio | median of added costs | paired per round |", "|---|---|---|"]
    table += [
        f"| {key} | {value:.3f} | {ratios_paired[key]:.3f} |" for key, value in ratios.items()
    ]
    (RESULTS / "http_clients.md").write_text("\n".join(table) + "\n")
    obskit.shutdown()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1:2] == ["--instructions"]:
        count_instructions(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
    else:
        main()
