"""What bounding export sizes costs the export thread, per batch of 512 ended spans.

obskit cuts every string to the length limit and splits a batch into requests within
``export_max_request_bytes`` just before export (``obskit._traces.size_limits``). That
work runs on the batch processor's thread, next to the OTLP encoder's. This script
times, on the same 512 spans (a typical HTTP server span: 6 attributes, no events),
``SizeLimits.split`` against ``encode_spans(...).SerializeToString()`` — what the
OTLP/HTTP exporter does to every batch — interleaved round by round, and prints the
medians and their ratio. A second case adds one exception event per span.

Run: ``python benchmarks/bench_export_sizes.py [rounds]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from obskit._traces.size_limits import SizeLimits


def batch(with_exception: bool) -> Sequence[ReadableSpan]:
    """512 ended HTTP server spans, each with an exception event if asked."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench", "1.0")
    for n in range(512):
        attributes = {
            "http.request.method": "GET",
            "http.route": "/users/<int:id>",
            "http.response.status_code": 200,
            "url.path": f"/users/{n}",
            "server.address": "localhost",
            "network.protocol.version": "1.1",
        }
        with tracer.start_as_current_span("GET /users/<int:id>", attributes=attributes) as span:
            if with_exception:
                try:
                    raise KeyError(n)
                except KeyError as error:
                    span.record_exception(error)
    return exporter.get_finished_spans()


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    sizes = SizeLimits(4096, 3_670_016)
    print(f"per batch of 512 spans, median of {rounds} interleaved rounds")
    print(f"{'case':<34}{'encode ms':>11}{'split ms':>10}{'split/encode':>14}")
    for label, with_exception in (("HTTP spans", False), ("HTTP spans + exception event", True)):
        spans = batch(with_exception)
        encode: list[float] = []
        split: list[float] = []
        for _ in range(rounds):
            encode.append(timed(lambda spans=spans: encode_spans(spans).SerializeToString()))
            split.append(timed(lambda spans=spans: sizes.split(spans)))
        e, s = statistics.median(encode) * 1e3, statistics.median(split) * 1e3
        print(f"{label:<34}{e:>11.2f}{s:>10.2f}{s / e:>14.2f}")


if __name__ == "__main__":
    main()
