"""Paced export: the batch export thread encodes in slices with pauses between them, and
still delivers every span, in order, within the byte cap; flushes and shutdown do not
pause; a forked child exports its own spans. Real OTLP receivers throughout.

Speed is not judged here (``benchmarks/bench_export_stall.py`` measures it). To make
pacing deterministic, the tests set the slice to 0 (a pause after every span) and pick
the pause length: long pauses make a flush that kept pausing miss its deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

import obskit
from obskit._traces import paced_export
from obskit._traces.guarded_export import GuardedExporter
from obskit._traces.paced_export import PacedSpans, Pacer, chunked
from tests.receivers import OtlpGrpcReceiver, OtlpHttpReceiver
from tests.servers import run_python

FAST_PATHS = pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "sdk"])
#: The request cap of the receiver in the order test (obskit's smallest): about 20 of its
#: 3 kB spans per request.
CAP = 64 * 1024


def _pacer(handle: obskit.Telemetry) -> Pacer:
    exporter = handle._exporter
    assert isinstance(exporter, GuardedExporter)
    assert exporter.pacer is not None
    return exporter.pacer


def _pause_after_every_span(
    monkeypatch: pytest.MonkeyPatch, pause: float, max_spans: int | None = None
) -> None:
    """Pace deterministically: a slice of 0 (a pause after every span) of ``pause`` s."""
    monkeypatch.setattr(paced_export, "SLICE", 0.0)
    monkeypatch.setattr(paced_export, "PAUSE", pause)
    if max_spans is not None:
        monkeypatch.setattr(paced_export, "MAX_SPANS", max_spans)


def _end_spans(name: str, count: int, **attributes: str) -> None:
    """``count`` spans named ``name``, each with its index as attribute ``n``."""
    for n in range(count):
        with obskit.span(name, n=n, **attributes):
            pass


def _wait(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        time.sleep(0.01)


def _spans(count: int) -> list[ReadableSpan]:
    return [
        ReadableSpan(
            name=f"s{n}",
            context=SpanContext(1, n + 1, is_remote=False, trace_flags=TraceFlags(1)),
            resource=Resource.create({}),
        )
        for n in range(count)
    ]


@pytest.fixture
def capped_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver(max_body_bytes=CAP)
    yield receiver
    receiver.close()


@FAST_PATHS
def test_a_paced_export_delivers_every_span_in_order_within_the_byte_cap(
    capped_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch, fast_paths: bool
) -> None:
    """600 spans of 3 kB in batches of 100, paused after every span and sent in requests
    of at most 16 spans under a 64 KiB cap: all 600 reach a receiver that refuses bodies
    over the cap, in the order they ended, none refused, with pauses made."""
    _pause_after_every_span(monkeypatch, 0.0, max_spans=16)
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
    handle = obskit.init(
        service_name="paced",
        otlp_endpoint=capped_receiver.endpoint,
        export_max_request_bytes=CAP,
        fast_paths=fast_paths,
    )
    _end_spans("paced-span", 600, padding="p" * 3000)
    spans = capped_receiver.wait_for(600)
    assert [span.attributes["n"] for span in spans] == list(range(600))
    assert capped_receiver.refused == 0
    assert max(capped_receiver.body_sizes) <= CAP
    assert capped_receiver.requests >= 600 // 16
    assert _pacer(handle).pauses > 0


def test_a_paced_export_over_grpc_delivers_every_span_in_order(
    grpc_receiver: OtlpGrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gRPC exporter iterates its batch as the HTTP one does: 300 spans paused after
    every span arrive complete and in order, in requests of at most 64 spans."""
    _pause_after_every_span(monkeypatch, 0.0, max_spans=64)
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
    handle = obskit.init(
        service_name="paced", otlp_endpoint=grpc_receiver.endpoint, otlp_protocol="grpc"
    )
    _end_spans("paced-span", 300)
    spans = grpc_receiver.wait_for(300)
    assert [span.attributes["n"] for span in spans] == list(range(300))
    assert grpc_receiver.requests >= 300 // 64
    assert _pacer(handle).pauses > 0


def test_force_flush_exports_everything_without_pausing(
    http_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush of 300 queued spans makes no pause (paced, 50 ms after each span, it would
    need 15 s): force_flush() returns True within its 5 s deadline and all 300 arrived."""
    _pause_after_every_span(monkeypatch, 0.05)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only the flush exports
    handle = obskit.init(service_name="paced", otlp_endpoint=http_receiver.endpoint)
    _end_spans("queued", 300)
    assert handle.force_flush(timeout=5) is True
    assert len(http_receiver.spans) == 300
    assert _pacer(handle).pauses == 0


def test_shutdown_during_a_paced_export_stops_its_pauses(
    http_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shutdown() while the export thread is pausing through a 512-span batch (20 ms after
    each span: 10 s to go) ends the pauses at once: the batch and the 88 spans queued
    after it all arrive, and shutdown() reports it finished within its 5 s deadline."""
    _pause_after_every_span(monkeypatch, 0.02)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # batches by size only
    handle = obskit.init(service_name="paced", otlp_endpoint=http_receiver.endpoint)
    _end_spans("busy", 600)
    pacer = _pacer(handle)
    _wait(lambda: pacer.pauses > 0)
    assert pacer.pauses > 0  # mid-batch, pausing
    assert not http_receiver.spans
    assert obskit.shutdown(timeout=5) is True
    assert sorted(span.attributes["n"] for span in http_receiver.spans) == list(range(600))


def test_the_export_stops_pausing_while_its_queue_is_over_half_full(
    http_receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch processor's pacer hurries from the moment half of its queue (50 of 100
    spans) waits, so pacing never costs a span to a full queue, and paces again once a
    flush has emptied it."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only the flush exports
    handle = obskit.init(service_name="paced", otlp_endpoint=http_receiver.endpoint)
    pacer = _pacer(handle)
    _end_spans("queued", 49)
    assert not pacer.hurried
    _end_spans("queued", 1)
    assert pacer.hurried
    assert handle.force_flush(timeout=10) is True
    assert not pacer.hurried
    assert len(http_receiver.spans) == 50


def test_iteration_pauses_only_while_the_pacer_is_not_hurried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PacedSpans yields every span in order; it pauses after each slice, but not while a
    flush holds a hurry token nor while the export falls behind."""
    _pause_after_every_span(monkeypatch, 0.0)
    spans = _spans(10)
    pacer = Pacer()
    assert list(PacedSpans(spans, pacer)) == spans
    assert pacer.pauses == 10
    token = pacer.hurry()
    assert list(PacedSpans(spans, pacer)) == spans
    assert pacer.pauses == 10
    pacer.done(token)
    assert not pacer.hurried
    behind = Pacer(lambda: True)
    assert list(PacedSpans(spans, behind)) == spans
    assert behind.pauses == 0
    paced = PacedSpans(spans, pacer)
    assert len(paced) == 10
    assert paced[3] is spans[3]
    assert list(paced[2:4]) == spans[2:4]


def test_chunks_keep_the_order_and_cut_only_long_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chunked() cuts each request longer than MAX_SPANS into pieces of that many spans,
    in order, and leaves shorter requests whole."""
    monkeypatch.setattr(paced_export, "MAX_SPANS", 4)
    spans = _spans(13)
    requests = [spans[:10], spans[10:]]
    pieces = chunked(requests)
    assert [len(piece) for piece in pieces] == [4, 4, 2, 3]
    assert [span for piece in pieces for span in piece] == spans
    assert chunked([spans[:4], spans[4:7]]) == [spans[:4], spans[4:7]]


def test_the_batch_processor_paces_its_exporter_and_the_console_does_not(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """OTLP export (a batch processor on a background thread) is paced; the console
    exporter, which writes each span on the thread that ends it, never pauses."""
    handle = obskit.init(service_name="paced", otlp_endpoint=http_receiver.endpoint)
    assert _pacer(handle) is not None
    obskit.shutdown()
    console = obskit.init(service_name="paced", traces_exporter="console")
    assert isinstance(console._exporter, GuardedExporter)
    assert console._exporter.pacer is None


CHILD = """
import os, sys, threading, time
import obskit
from obskit._traces import paced_export

paced_export.SLICE = 0.0     # a pause after every span: the parent's export is always
paced_export.PAUSE = 0.001   # pausing when a child is forked
obskit.init(service_name="forky", otlp_endpoint=ENDPOINT)
stop = threading.Event()


def busy():
    n = 0
    while not stop.is_set():
        with obskit.span("parent-busy", n=n):
            pass
        n += 1
        time.sleep(0.0005)


thread = threading.Thread(target=busy)
thread.start()
time.sleep(0.5)
pids = []
for index in range(5):
    pid = os.fork()
    if pid == 0:
        for n in range(200):
            with obskit.span(f"child-{index}", n=n):
                pass
        os._exit(0 if obskit.shutdown(timeout=10) else 3)
    pids.append(pid)
    time.sleep(0.1)
codes = []
for pid in pids:
    for _ in range(300):  # at most 30 s per child
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            codes.append(os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        codes.append("hung")
stop.set()
thread.join()
obskit.shutdown(timeout=10)
print("codes", *codes, file=sys.stderr)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
def test_children_forked_during_a_paced_export_export_their_own_spans(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """5 children forked while the parent's export thread pauses through its batches each
    build their own pipeline: none hangs, each exits 0 and each child's 200 spans reach
    the receiver from the child's own process."""
    script = f"ENDPOINT = {http_receiver.endpoint!r}\n" + CHILD
    result = run_python(script, {"OTEL_BSP_SCHEDULE_DELAY": "100"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "codes 0 0 0 0 0", result.stderr[-3000:]
    names = {f"child-{index}" for index in range(5)}
    spans = [span for span in http_receiver.wait_for(1000) if span.name in names]
    assert len(spans) == 1000
    pids = {
        name: {span.resource["process.pid"] for span in spans if span.name == name}
        for name in names
    }
    assert all(len(found) == 1 for found in pids.values())
    assert len({next(iter(found)) for found in pids.values()}) == 5
