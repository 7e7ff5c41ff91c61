"""The gate in front of a pipeline's span processor: no span ends uncounted.

A span belongs to the pipeline it started in: the SDK hands it, when it ends, to the
span processors of the provider that made it, even after ``init()`` has installed
another provider or ``shutdown()`` has stopped this one. Once the batch processor is
shut down it ignores such a span without counting it (OpenTelemetry logs at most an
INFO line), and a span that ends *while* it shuts down can slip into its queue after
the last export and vanish.

:class:`PipelineGate` wraps obskit's processor. Until the pipeline closes it hands
every ended span on; ``shutdown()`` closes the gate first — waiting for any hand-over
in progress, so each span is either in the queue that the shutdown exports or sees the
gate closed — and then shuts the processor down. A sampled span that ends after that
is counted in ``obskit_dropped_total{signal="traces",reason="pipeline_closed"}``. So
for every sampled span a pipeline started: exported, or counted as dropped with a
reason (``queue_full``, ``export_failed``, ``shutdown``, ``pipeline_closed``).

The gate keeps the no-op ``on_start`` (and end hook) of :class:`SpanProcessor`, so a
span's start costs nothing more. An end costs a list append and pop (no lock: a lock
would cost each span end more than the rest of the gate, and a lock held at ``fork()``
would stay held in the child).
"""

from __future__ import annotations

import time
import weakref

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from obskit._lifecycle import after_fork
from obskit._lifecycle import self_stats as _self_stats

#: The ``reason`` of a span that ended after its pipeline was shut down.
PIPELINE_CLOSED = "pipeline_closed"
#: How long ``shutdown()`` waits for hand-overs in progress (a batch processor's take
#: microseconds; only a synchronous export blocked on its output could take longer).
HANDOVER_WAIT = 1.0

#: Every gate alive, for the after-fork reset of their hand-over marks.
_gates: weakref.WeakSet[PipelineGate] = weakref.WeakSet()


@after_fork.in_child
def _forget_handovers() -> None:
    """A hand-over another thread was making at fork never finishes in the child."""
    for gate in list(_gates):
        gate._busy = []


class PipelineGate(SpanProcessor):
    """Hands ended spans to ``processor`` until :meth:`shutdown`; counts later ones."""

    def __init__(self, processor: SpanProcessor) -> None:
        self.processor = processor
        self._closed = False
        #: One mark per hand-over in progress (``list.append``/``pop`` are atomic).
        self._busy: list[None] = []
        _gates.add(self)

    def on_end(self, span: ReadableSpan) -> None:
        busy = self._busy
        busy.append(None)  # before looking at _closed: shutdown() waits for the mark
        try:
            if not self._closed:
                self.processor.on_end(span)
                return
        finally:
            busy.pop()
        context = span.context
        if context is not None and context.trace_flags.sampled:
            _self_stats.add("obskit_dropped", signal="traces", reason=PIPELINE_CLOSED)

    def shutdown(self) -> None:
        self._closed = True
        # A span whose hand-over began before the line above may be on its way into
        # the processor's queue: let it arrive, so the processor's shutdown exports it.
        deadline = time.monotonic() + HANDOVER_WAIT
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.0005)
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)
