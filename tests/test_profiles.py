"""The sampling profiler: samples labelled with the span running on the thread or
asyncio task, root spans' ``pyroscope.profile.id``, slow spans' hot frames, bounded
memory, one sampler per process after fork, and its own counts on ``/metrics``."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

import pytest

import obskit
import obskit.testing
from obskit._lifecycle import self_stats
from obskit._profiles import install
from obskit._profiles.sampler import Sampler
from obskit._profiles.span_hooks import HOT_FRAMES_EVENT, PROFILE_ID
from obskit._profiles.window import OVERFLOW_FRAME, Window
from tests.conftest import openmetrics
from tests.receivers import OtlpHttpReceiver


def busy_loop(seconds: float) -> int:
    """Burn CPU in this function for ``seconds``."""
    deadline = time.perf_counter() + seconds
    turns = 0
    while time.perf_counter() < deadline:
        turns += 1
    return turns


def _hex(span: Any) -> tuple[str, str]:
    context = span.context
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _samples_in(
    window: Window, function: str, depth: int = 1
) -> dict[tuple[tuple[str, str], ...], int]:
    """Samples with ``function`` among their ``depth`` innermost frames, by labels (thread
    name left out)."""
    found: dict[tuple[tuple[str, str], ...], int] = {}
    for (stack, labels), count in window.counts.items():
        if any(frame[0].rsplit(".", 1)[-1] == function for frame in stack[:depth]):
            key = tuple(pair for pair in labels if pair[0] != "thread_name")
            found[key] = found.get(key, 0) + count
    return found


def _sampler() -> Sampler:
    sampler = install.sampler()
    assert sampler is not None
    return sampler


def test_samples_taken_in_a_traced_call_carry_its_trace_and_root_span_ids() -> None:
    """A @traced function burning CPU on a thread inside a nested span: the samples whose
    innermost frame is the busy function carry the trace_id, and the span_id and name of
    the local root (the @traced call, whose pyroscope.profile.id names it), never
    another span's."""
    with obskit.testing.capture(sequential_ids=False, profiles=True, profile_hz=200) as cap:

        @obskit.traced(name="report.build")
        def build() -> None:
            with obskit.span("report.rows"):
                busy_loop(0.4)

        thread = threading.Thread(target=build, name="reporter")
        thread.start()
        thread.join()
        window = _sampler().take()
        span = next(span for span in cap.spans if span.name == "report.build")
    trace_id, span_id = _hex(span)
    assert span.attributes[PROFILE_ID] == span_id
    found = _samples_in(window, "busy_loop")
    assert list(found) == [
        (("span_id", span_id), ("span_name", "report.build"), ("trace_id", trace_id))
    ]
    assert found[next(iter(found))] >= 10
    assert window.period_ns == 5_000_000


def test_samples_of_asyncio_tasks_carry_the_running_tasks_span() -> None:
    """Two asyncio tasks, each in its own traced coroutine, burning CPU in turn on one
    thread: each task's busy samples carry its own span id, never the other's."""

    def busy_a() -> None:
        busy_loop(0.25)

    def busy_b() -> None:
        busy_loop(0.25)

    with obskit.testing.capture(sequential_ids=False, profiles=True, profile_hz=200) as cap:

        @obskit.traced(name="task.a")
        async def task_a() -> None:
            await asyncio.sleep(0)
            busy_a()

        @obskit.traced(name="task.b")
        async def task_b() -> None:
            await asyncio.sleep(0)
            busy_b()

        async def main() -> None:
            await asyncio.gather(task_a(), task_b())

        asyncio.run(main())
        window = _sampler().take()
        spans = {span.name: _hex(span)[1] for span in cap.spans}
    for function, name in (("busy_a", "task.a"), ("busy_b", "task.b")):
        found = _samples_in(window, function, depth=2)
        assert {dict(labels)["span_id"] for labels in found} == {spans[name]}, function


def test_root_spans_carry_pyroscope_profile_id_and_children_do_not() -> None:
    """With profiles on, a root span's pyroscope.profile.id is its own span id (hex);
    its child has none; with profiles off no span has it."""
    with obskit.testing.capture(sequential_ids=False, profiles=True) as cap:
        with obskit.span("root"), obskit.span("child"):
            pass
        spans = {span.name: span for span in cap.spans}
    assert spans["root"].attributes[PROFILE_ID] == _hex(spans["root"])[1]
    assert PROFILE_ID not in spans["child"].attributes
    with obskit.testing.capture(sequential_ids=False) as cap:
        with obskit.span("root"):
            pass
        (span,) = cap.spans
    assert PROFILE_ID not in span.attributes


def test_a_slow_span_gets_its_hot_frames_as_an_event_and_a_quick_one_does_not(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """Exported over OTLP: a span over profile_slow_span carries one profile.hot_frames
    event naming the busy function first; a span under it carries none."""
    obskit.init(
        service_name="hot",
        otlp_endpoint=http_receiver.endpoint,
        metrics_port=0,
        profiles=True,
        profile_hz=200,
        profile_slow_span=0.2,
    )
    try:
        with obskit.span("slow"):
            busy_loop(0.4)
        with obskit.span("quick"):
            busy_loop(0.02)
    finally:
        obskit.shutdown()
    spans = {span.name: span for span in http_receiver.wait_for(2)}
    ((name, attributes),) = spans["slow"].events
    assert name == HOT_FRAMES_EVENT
    assert attributes["profile.samples"] >= 20
    assert attributes["profile.hot_frames"][0].startswith("busy_loop (")
    assert attributes["profile.hot_stack"].startswith("busy_loop (")
    assert "test_profiles.py" in attributes["profile.hot_stack"]
    assert spans["quick"].events == []


def test_distinct_stacks_beyond_the_limit_are_counted_under_one_frame() -> None:
    """10,000 distinct stacks sampled with a limit of 500: the window keeps at most 500
    stacks plus the one overflow frame per label set, and every sample is counted."""
    sampler = Sampler(hz=100, max_stacks=500)
    me = threading.current_thread().name
    functions = []
    for n in range(10_000):
        namespace: dict[str, Any] = {"sampler": sampler}
        exec(compile(f"def leaf_{n}():\n    sampler.sample()\n", f"<gen {n}>", "exec"), namespace)
        functions.append(namespace[f"leaf_{n}"])
    for function in functions:
        function()
    window = sampler.take()
    mine = {key: count for key, count in window.counts.items() if ("thread_name", me) in key[1]}
    assert len(mine) <= 501
    overflow = [count for (stack, _), count in mine.items() if stack == (OVERFLOW_FRAME,)]
    assert overflow == [10_000 - (len(mine) - 1)]
    assert sum(mine.values()) == 10_000
    assert window.overflow >= overflow[0]


def _child_profile(results: Any, parent_sampler: int) -> None:
    sampler = install.sampler()
    running = sampler is not None and sampler.running()
    busy_loop(0.3)
    window = sampler.take() if sampler is not None else None
    busy = _samples_in(window, "busy_loop") if window is not None else {}
    results.put((running, id(sampler) != parent_sampler, sum(busy.values())))


@pytest.mark.slow
def test_a_forked_child_samples_with_its_own_profiler() -> None:
    """A multiprocessing child forked after init(): its own sampler thread runs and
    samples the child's busy function; the parent's keeps running."""
    obskit.init(service_name="fork", profiles=True, metrics_port=0, profile_hz=200)
    try:
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child_profile, args=(results, id(install.sampler())))
        child.start()
        try:
            running, own, busy = results.get(timeout=30)
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
        assert running
        assert own
        assert busy >= 10
        assert _sampler().running()
    finally:
        obskit.shutdown()


def test_the_profilers_own_counts_are_on_metrics() -> None:
    """After an interval: obskit_profiler_samples_total and
    obskit_profiler_seconds_total on obskit's registry, samples counted."""
    before = self_stats.value("obskit_profiler_samples")
    with obskit.testing.capture(profiles=True, profile_hz=200, profile_interval=1):
        busy_loop(0.2)
        deadline = time.monotonic() + 10
        while self_stats.value("obskit_profiler_samples") == before:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        families = openmetrics()
    assert families["obskit_profiler_samples"].samples[0].value > 0
    assert families["obskit_profiler_seconds"].samples[0].value > 0


def test_shutdown_stops_the_profiler_threads() -> None:
    """shutdown() ends the sampling and exporting threads; init() without profiles
    starts none."""
    obskit.init(service_name="stop", profiles=True, metrics_port=0)
    sampler = _sampler()
    assert sampler.running()
    obskit.shutdown()
    assert not sampler.running()
    assert install.sampler() is None
    names = {thread.name for thread in threading.enumerate()}
    assert "obskit-profiler" not in names
    assert "obskit-profile-export" not in names
    obskit.init(service_name="off", metrics_port=0)
    try:
        assert install.sampler() is None
    finally:
        obskit.shutdown()


def _remote_parent(trace_id: int, sampled: bool) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_two_requests_of_one_trace_each_label_their_samples_with_their_own_root() -> None:
    """Two spans continuing the same remote trace, busy on two threads at once: each
    thread's samples carry its own span's id as span_id (the local root of each), not
    the other's."""
    from opentelemetry import context as otel_context

    parent = _remote_parent(0xABC, sampled=True)

    def busy_a() -> None:
        busy_loop(0.3)

    def busy_b() -> None:
        busy_loop(0.3)

    ids: dict[str, str] = {}

    def request(name: str, work: Any) -> None:
        token = otel_context.attach(parent)
        try:
            with obskit.span(name) as span:
                ids[name] = format(span.get_span_context().span_id, "016x")
                work()
        finally:
            otel_context.detach(token)

    with obskit.testing.capture(sequential_ids=False, profiles=True, profile_hz=200):
        threads = [
            threading.Thread(target=request, args=("a", busy_a)),
            threading.Thread(target=request, args=("b", busy_b)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        window = _sampler().take()
    for function, name in (("busy_a", "a"), ("busy_b", "b")):
        found = _samples_in(window, function, depth=2)
        assert {dict(labels)["span_id"] for labels in found} == {ids[name]}, function


def test_unsampled_spans_never_crowd_out_a_sampled_spans_hot_frames(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """1,200 unsampled spans ending while the sampler runs, then a slow sampled span: the
    slow span still gets its profile.hot_frames event."""
    from opentelemetry import context as otel_context

    obskit.init(
        service_name="crowd",
        otlp_endpoint=http_receiver.endpoint,
        metrics_port=0,
        profiles=True,
        profile_hz=500,
        profile_slow_span=0.2,
    )
    try:
        token = otel_context.attach(_remote_parent(0xDEF, sampled=False))
        try:
            for _ in range(1200):
                with obskit.span("unsampled"):
                    busy_loop(0.001)
        finally:
            otel_context.detach(token)
        with obskit.span("slow"):
            busy_loop(0.4)
    finally:
        obskit.shutdown()
    (slow,) = [span for span in http_receiver.wait_for(1) if span.name == "slow"]
    assert [name for name, _ in slow.events] == [HOT_FRAMES_EVENT]


def test_profiles_written_or_sent_without_protobuf_fail_init_with_the_fix() -> None:
    """Where protobuf is not installed, profiles with a profile_dir fail init() with one
    ConfigError naming the setting and the extra to install; without a destination
    (hot frames only) init() succeeds."""
    from tests.servers import run_python

    result = run_python(
        """
        import sys
        sys.modules["google.protobuf"] = None  # as if protobuf were not installed
        import obskit
        try:
            obskit.init(service_name="p", profiles=True, profile_dir="/tmp/never")
        except obskit.ConfigError as error:
            print("refused:", error)
        obskit.init(service_name="p", profiles=True)
        print("hot frames only: ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout
    assert "profiles" in result.stdout
    assert "pip install 'obskit-sdk[profiles]'" in result.stdout
    assert "hot frames only: ok" in result.stdout


def test_a_password_in_the_pyroscope_endpoint_stays_out_of_errors_and_obskit_config() -> None:
    """A user:password@ in pyroscope_endpoint is shown as user:[REDACTED]@ in the
    ConfigError of a bad value and in `obskit config`."""
    from tests.servers import run_python

    with pytest.raises(obskit.ConfigError) as raised:
        obskit.init(pyroscope_endpoint="ftp://ops:hunter2@pyroscope:4040")
    assert "hunter2" not in str(raised.value)
    assert "ops:[REDACTED]@pyroscope" in str(raised.value)
    shown = run_python(
        "from obskit.cli import main\nmain(['config'])\n",
        env={"OBSKIT_PYROSCOPE_ENDPOINT": "http://ops:hunter2@pyroscope:4040"},
    )
    assert "hunter2" not in shown.stdout
    assert "http://ops:[REDACTED]@pyroscope:4040" in shown.stdout


def test_the_hot_frames_event_reaches_every_exporting_processor(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """With an OTLP exporter and obskit.testing.capture() both on the provider, a slow
    span carries the same profile.hot_frames event in both."""
    with obskit.testing.capture(
        sequential_ids=False,
        traces_exporter="otlp",
        otlp_endpoint=http_receiver.endpoint,
        profiles=True,
        profile_hz=200,
        profile_slow_span=0.2,
    ) as cap:
        with obskit.span("slow"):
            busy_loop(0.4)
        (captured,) = cap.spans
    (received,) = http_receiver.wait_for(1)
    assert [event.name for event in captured.events] == [HOT_FRAMES_EVENT]
    assert [name for name, _ in received.events] == [HOT_FRAMES_EVENT]
    mine = dict(captured.events[0].attributes or {})
    theirs = received.events[0][1]
    assert mine["profile.hot_stack"] == theirs["profile.hot_stack"]
    assert list(mine["profile.hot_frames"]) == theirs["profile.hot_frames"]
