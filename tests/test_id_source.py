"""Where trace and span ids come from: the OS random source, never the global ``random``.

Both span paths (the fast path and the SDK's public path, ``fast_paths=False``) draw
from :mod:`obskit._traces.ids`; it shares no state with ``random``, is thread-safe,
never hands out a zero id and a forked child never repeats its parent's ids.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import obskit
from obskit._fast import spans as fast_spans
from obskit._fast import status
from obskit._traces import ids
from tests.servers import run_python

PATHS = pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])


def _app() -> Flask:
    app = Flask(__name__)
    obskit.instrument_flask(app)

    @app.get("/")
    def index() -> str:
        return "ok"

    return app


def _spans_of_every_kind(app: Flask) -> list[tuple[int, int]]:
    """(trace id, span id) of spans made every way obskit makes them: a root ``span()``
    block, a ``@traced`` child, a server span, and a child of an unsampled parent."""

    @obskit.traced
    def child() -> SpanContext:
        return trace.get_current_span().get_span_context()

    made: list[SpanContext] = []
    with obskit.span("root") as root:
        made.append(root.get_span_context())
        made.append(child())
    reply = app.test_client().get("/")
    _, trace_id, span_id, _ = reply.headers["traceresponse"].split("-")
    made.append(SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True))
    unsampled = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unsampled)):
        made.append(child())
    return [(context.trace_id, context.span_id) for context in made]


@PATHS
def test_spans_never_draw_from_the_global_random(fast_paths: bool) -> None:
    """Spans of every kind leave the global ``random``'s state untouched, on both paths."""
    handle = obskit.init(service_name="ids", traces_exporter="none", fast_paths=fast_paths)
    assert handle.tracer_provider is not None
    assert type(handle.tracer_provider.id_generator) is ids.OsRandomIdGenerator
    on = fast_paths and status.enabled("spans")  # (off where the SDK lacks its names)
    assert (fast_spans.fast_tracer(handle.tracer) is not None) is on
    app = _app()
    _spans_of_every_kind(app)  # warm: imports, caches
    before = random.getstate()
    made = _spans_of_every_kind(app)
    assert random.getstate() == before
    assert all(trace_id and span_id for trace_id, span_id in made)


@PATHS
def test_reseeding_the_global_random_does_not_repeat_ids(fast_paths: bool) -> None:
    """The same seed in ``random`` twice gives other ids the second time."""
    obskit.init(service_name="ids", traces_exporter="none", fast_paths=fast_paths)
    app = _app()
    random.seed(1234)
    first = _spans_of_every_kind(app)
    random.seed(1234)
    second = _spans_of_every_kind(app)
    assert not {span_id for _, span_id in first} & {span_id for _, span_id in second}


def test_ids_from_many_threads_are_distinct_non_zero_and_in_range() -> None:
    """8 threads drawing 20,000 trace and span ids each (many blocks, refills racing)
    get no id twice and no zero id."""
    drawn: list[list[tuple[int, int]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def draw(into: list[tuple[int, int]]) -> None:
        start.wait()
        for _ in range(20_000):
            into.append((ids.new_trace_id(), ids.new_span_id()))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    pairs = [pair for into in drawn for pair in into]
    assert len(pairs) == 160_000
    trace_ids = {trace_id for trace_id, _ in pairs}
    span_ids = {span_id for _, span_id in pairs}
    assert len(trace_ids) == len(span_ids) == 160_000
    assert all(0 < trace_id < 2**128 for trace_id in trace_ids)
    assert all(0 < span_id < 2**64 for span_id in span_ids)
    assert max(trace_ids).bit_length() > 120
    assert max(span_ids).bit_length() > 56


@pytest.fixture
def zero_blocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The OS source answering all-zero blocks first (no real OS can be made to: a fake
    ``os.urandom`` in the ids module only), then real ones; yields the sizes read."""
    reads: list[int] = []
    real = os.urandom

    class FakeOs:
        @staticmethod
        def urandom(size: int) -> bytes:
            reads.append(size)
            return bytes(size) if len(reads) <= 2 else real(size)

        @staticmethod
        def register_at_fork(**callbacks: object) -> None:
            os.register_at_fork(**callbacks)  # type: ignore[arg-type]

    ids._forget()
    monkeypatch.setattr(ids, "os", FakeOs)
    yield reads
    ids._forget()


def test_a_zero_is_never_handed_out(zero_blocks: list[int]) -> None:
    """Zeros from the source are skipped (the all-zero id is invalid), block after block."""
    assert ids.new_span_id() != 0
    assert ids.new_trace_id() != 0
    assert len(zero_blocks) == 4  # span ids: two all-zero blocks, then a real one; trace ids: one
    assert ids.OsRandomIdGenerator().generate_span_id() != 0


FORK_SCRIPT = """
import json, os, sys, time
import obskit

obskit.init(service_name="forky", traces_exporter="none")

def made(count):
    out = []
    for _ in range(count):
        with obskit.span("work") as span:
            context = span.get_span_context()
            out.append([context.trace_id, context.span_id])
    return out

made(100)  # the parent is part way through its blocks when it forks
children = []
for _ in range(4):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(made(600)).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
mine = made(600)
theirs = []
for pid, read in children:
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    deadline = time.monotonic() + 30
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            sys.exit("child hung")
        time.sleep(0.01)
    theirs.append(json.loads(b"".join(chunks)))
print(json.dumps({"parent": mine, "children": theirs}))
"""


@PATHS
def test_forked_children_never_repeat_their_parents_ids(fast_paths: bool) -> None:
    """A parent part way through its id blocks forks 4 children; the 600 spans each of
    the 5 processes makes next share no trace id and no span id."""
    result = run_python(
        FORK_SCRIPT, env={"OBSKIT_FAST_PATHS": "1" if fast_paths else "0"}, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    made = json.loads(result.stdout.splitlines()[-1])
    processes = [made["parent"], *made["children"]]
    assert [len(pairs) for pairs in processes] == [600] * 5
    trace_ids = [trace_id for pairs in processes for trace_id, _ in pairs]
    span_ids = [span_id for pairs in processes for _, span_id in pairs]
    assert len(set(trace_ids)) == len(trace_ids) == 3000
    assert len(set(span_ids)) == len(span_ids) == 3000
