"""The span exporter wrapper: export errors contained, each export bounded by its
timeout, shutdown idempotent and abortable; the batch processor that counts its drops.

Upstream exporters may raise, log a warning on a second ``shutdown()``, and keep
retrying after the caller has given up (before OpenTelemetry 1.28 the OTLP exporters
retry for up to 63 s whatever their timeout). :class:`GuardedExporter` sits between the
batch processor and the real exporter so that none of this reaches the app, and so
that ``obskit.shutdown()`` can cut retries short when its deadline passes.

Only the SDK's public API is used here, so that a new release can make obskit slower
but never wrong: the batch processor's queue is mirrored by obskit's own count.
"""

from __future__ import annotations

import collections
import contextvars
import os
import socket
import threading
import time
import weakref
from collections.abc import Sequence

from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._traces.export_reasons import (
    TOO_LARGE,
    Attempt,
    ReasonRecorder,
    refused_at_deadline,
)
from obskit._traces.paced_export import Pacer, chunked, paced
from obskit._traces.size_limits import SizeLimits

#: How long past an export's deadline the guard still waits for the exporter's own
#: outcome: an exporter that bounds itself by the same timeout ends right at it.
GRACE = 0.1
#: How often a waiting export looks whether the guard was shut down meanwhile.
_POLL = 0.05
#: How many times one batch's requests may be halved after the collector refused one
#: as too large (its limit is below ``export_max_request_bytes``).
MAX_SPLITS = 16


class _Outcome:
    """What one export came to: a result (with the reason of a failure) or an exception."""

    __slots__ = ("error", "reason", "result")

    def __init__(
        self,
        result: SpanExportResult | None = None,
        error: Exception | None = None,
        reason: str | None = None,
    ) -> None:
        self.result = result
        self.error = error
        self.reason = reason


class GuardedExporter(SpanExporter):
    """Delegates to ``exporter``; never raises, shuts the delegate down exactly once.

    With a ``timeout`` (seconds: the OTLP timeout), each export is made on a thread of
    its own and waited for at most that long (plus :data:`GRACE`): an exporter that
    retries past it is left to finish alone, its batch counted as failed, and obskit's
    session refuses its next attempt. While it still runs, the next export waits for it
    within its own timeout, so the delegate never exports two batches at once.
    ``shutdown()`` ends a wait at once.

    While exports are failing and ``endpoint`` (host, port) refuses TCP connections —
    the collector is down — a batch is dropped (and counted) without being encoded
    and sent, so an outage does not cost the app CPU; :attr:`down` is then true, and
    :class:`CountingBatchSpanProcessor` stops queueing spans but one. The first batch
    after the port accepts connections again is exported normally.

    A failed batch is counted in ``obskit_export_errors_total`` with the ``reason``
    ``reasons`` recorded for the exporter's last attempt (an HTTP status, a timeout,
    a reset, a gRPC status code: see :mod:`obskit._traces.export_reasons`), else
    ``"timeout"`` for an export cut off at its deadline and ``"failure"`` otherwise.

    With ``sizes``, every string of every span is cut to the length limit and a batch
    is sent as requests within the byte cap (:mod:`obskit._traces.size_limits`), one
    after another, each within its own timeout. A span that fits in no request is
    dropped alone (``reason="too_large"``). A request the collector refuses as too
    large (HTTP 413, gRPC ``RESOURCE_EXHAUSTED``) is halved and its halves sent (at most
    :data:`MAX_SPLITS` times per batch); a single span refused so is dropped alone
    (``too_large``). Any other failure drops the batch's requests not yet sent, counted
    as ``export_failed`` as a whole failed batch is: they would fail as well.

    With a :attr:`pacer` (:class:`CountingBatchSpanProcessor` sets one: its exports run
    on a background thread), a batch is split and encoded in short slices with pauses
    between them (:mod:`obskit._traces.paced_export`), so that the app's threads never
    wait behind it for the GIL.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        endpoint: tuple[str, int] | None = None,
        reasons: ReasonRecorder | None = None,
        timeout: float | None = None,
        sizes: SizeLimits | None = None,
    ) -> None:
        self.exporter = exporter
        self._endpoint = endpoint
        self._sizes = sizes
        self._reasons = reasons
        self._timeout = timeout
        self._failing = False
        #: True from a batch dropped because the endpoint refused connections until
        #: the next batch that is sent: the collector is known to be down.
        self.down = False
        self._lock = threading.Lock()
        self._closed = False
        #: The thread of the last timed export, which may outlive its deadline.
        self._running: threading.Thread | None = None
        #: Paces the encoding of batches exported in the background (None: not paced).
        self.pacer: Pacer | None = None

    def _unreachable(self) -> bool:
        if not self._failing or self._endpoint is None:
            return False
        try:
            with socket.create_connection(self._endpoint, timeout=0.25):
                return False
        except TimeoutError:
            # No proof the collector is down (a busy host's full accept backlog, a slow
            # network): the export, bounded by its own timeout, decides.
            return False
        except OSError:  # refused, no route, no such host
            return True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="shutdown")
            return SpanExportResult.FAILURE
        if self._unreachable():
            self.down = True
            _self_stats.add("obskit_export_errors", signal="traces", reason="unreachable")
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            return SpanExportResult.FAILURE
        self.down = False
        pacer = self.pacer
        spans = paced(spans, pacer)
        too_large: list[ReadableSpan]
        if self._sizes is None:
            if pacer is None:
                return self._count(spans, self._send(spans))
            requests, too_large = [list(spans)], []
        else:
            try:
                requests, too_large = self._sizes.split(spans)
            except Exception as error:  # obskit's own fault: the batch goes out as it is
                _internal_errors.report("export", error)
                requests, too_large = [list(spans)], []
        if too_large:
            _self_stats.add("obskit_dropped", len(too_large), signal="traces", reason="too_large")
        if pacer is not None and not pacer.hurried:
            requests = chunked(requests)
        return self._send_requests(requests, not too_large)

    def _send(self, spans: Sequence[ReadableSpan]) -> _Outcome:
        """One request: on this thread, or within the timeout on a thread of its own."""
        if self._timeout is None:
            return self._attempt(spans, None)
        return self._attempt_within(spans, self._timeout)

    def _send_requests(self, requests: list[list[ReadableSpan]], ok: bool) -> SpanExportResult:
        """Send ``requests`` in order (see the class docs for what a failure does)."""
        pending = collections.deque(requests)
        splits = MAX_SPLITS
        while pending:
            if self._closed:
                left = sum(len(request) for request in pending)
                _self_stats.add("obskit_dropped", left, signal="traces", reason="shutdown")
                return SpanExportResult.FAILURE
            request = pending.popleft()
            outcome = self._send(request)
            if outcome.error is None and outcome.result is SpanExportResult.SUCCESS:
                self._count(request, outcome)
                continue
            ok = False
            # The reason when the collector refused the request as too large, else None.
            refused = outcome.reason if outcome.error is None else None
            refused = refused if refused in TOO_LARGE else None
            if refused is not None and len(request) > 1 and splits > 0:
                splits -= 1
                _self_stats.add("obskit_export_errors", signal="traces", reason=refused)
                half = len(request) // 2
                pending.extendleft((request[half:], request[:half]))  # first half first
                continue
            if refused is not None and len(request) == 1:
                _self_stats.add("obskit_export_errors", signal="traces", reason=refused)
                _self_stats.add("obskit_dropped", signal="traces", reason="too_large")
                self._failing = False  # the collector answers: nothing to probe
                continue
            self._count(request, outcome)
            if refused is None:  # the collector fails: the rest would fail too
                left = sum(len(request) for request in pending)
                if left:
                    _self_stats.add("obskit_dropped", left, signal="traces", reason="export_failed")
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _attempt(
        self,
        spans: Sequence[ReadableSpan],
        deadline: float | None,
        box: list[Attempt] | None = None,
    ) -> _Outcome:
        """Export ``spans`` on this thread; the outcome with the last attempt's reason."""
        attempt = self._reasons.clear(deadline) if self._reasons is not None else None
        if box is not None and attempt is not None:
            box.append(attempt)
        try:
            result = self.exporter.export(paced(spans, self.pacer))
        except Exception as error:
            reason = attempt.reason if attempt is not None else None
            if refused_at_deadline(error):  # obskit's session ended it: out of time
                return _Outcome(SpanExportResult.FAILURE, reason=reason or "timeout")
            if reason is not None and isinstance(error, OSError):
                # A request that failed, raised through by an exporter that does not
                # catch it (OTLP/HTTP before 1.28): a failed export, not obskit's error.
                return _Outcome(SpanExportResult.FAILURE, reason=reason)
            return _Outcome(error=error, reason=reason)
        return _Outcome(result, reason=attempt.reason if attempt is not None else None)

    def _attempt_within(self, spans: Sequence[ReadableSpan], timeout: float) -> _Outcome:
        """:meth:`_attempt` on a thread of its own, waited for until the deadline."""
        deadline = time.monotonic() + timeout
        if not self._wait(self._running, deadline):
            # The export before this one is still running past its deadline.
            return _Outcome(SpanExportResult.FAILURE, reason="timeout")
        box: list[Attempt] = []
        outcomes: list[_Outcome] = []

        def run() -> None:
            outcomes.append(self._attempt(spans, deadline, box))

        # In the caller's context: the batch processor marks its exports as not to be
        # instrumented (an instrumented HTTP client must not trace the export itself).
        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(run,), name="obskit-export", daemon=True
        )
        self._running = thread
        thread.start()
        self._wait(thread, deadline + GRACE)
        if outcomes:
            return outcomes[0]
        reason = box[0].reason if box else None
        return _Outcome(SpanExportResult.FAILURE, reason=reason or "timeout")

    def _wait(self, thread: threading.Thread | None, until: float) -> bool:
        """Join ``thread`` until ``until`` (monotonic); False if it is still running then
        or the guard was shut down meanwhile."""
        while thread is not None and thread.is_alive():
            left = until - time.monotonic()
            if left <= 0 or self._closed:
                return False
            thread.join(min(left, _POLL))
        return not self._closed

    def _count(self, spans: Sequence[ReadableSpan], outcome: _Outcome) -> SpanExportResult:
        if outcome.error is not None:
            self._failing = True
            _self_stats.add(
                "obskit_export_errors", signal="traces", reason=outcome.reason or "exception"
            )
            _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
            _internal_errors.report("export", outcome.error)
            return SpanExportResult.FAILURE
        result = outcome.result
        self._failing = result is not SpanExportResult.SUCCESS
        if result is SpanExportResult.SUCCESS:
            _self_stats.add("obskit_spans_exported", len(spans))
            return result
        _self_stats.add("obskit_export_errors", signal="traces", reason=outcome.reason or "failure")
        _self_stats.add("obskit_dropped", len(spans), signal="traces", reason="export_failed")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Shut the delegate down (first call only); also ends an export's wait and
        interrupts the delegate's retry back-off."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.exporter.shutdown()
        except Exception as error:
            _internal_errors.report("export", error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.exporter.force_flush(timeout_millis)
        except Exception as error:
            _internal_errors.report("export", error)
            return False


#: The queue size the SDK uses when neither an argument nor OTEL_BSP_MAX_QUEUE_SIZE sets one.
DEFAULT_MAX_QUEUE_SIZE = 2048


def _max_queue_size(given: int | None) -> int:
    """The size of the SDK's batch queue: ``given``, else ``OTEL_BSP_MAX_QUEUE_SIZE``,
    else 2048, read as the SDK reads them (it warns about a value that is no integer)."""
    if given is not None:
        return given
    try:
        return int(os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE, "").strip() or DEFAULT_MAX_QUEUE_SIZE)
    except ValueError:  # the SDK falls back to its default too
        return DEFAULT_MAX_QUEUE_SIZE


class _Dequeued(SpanExporter):
    """Passes each batch on, first taking its spans off obskit's count of queued spans."""

    def __init__(self, exporter: SpanExporter, queued: collections.deque[None]) -> None:
        self.exporter = exporter
        self._queued = queued

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        queued = self._queued
        for _ in range(min(len(spans), len(queued))):
            queued.popleft()  # only the batch worker pops: never from an empty deque
        return self.exporter.export(spans)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting spans it drops because its queue is full.

    Upstream drops the oldest queued span and logs a (deduplicated) warning; obskit
    also counts each drop as ``obskit_dropped_total{signal="traces",reason="queue_full"}``.

    While its :class:`GuardedExporter` knows the collector is down (:attr:`~GuardedExporter.down`),
    a span that ends is queued only if the queue is empty: that one span's export probes
    the endpoint again each interval. The others are dropped and counted at once
    (``reason="export_failed"``, as their batch would be) instead of being held until
    the export drops them: an outage keeps no spans alive in the app, so they cost it
    neither memory nor garbage-collector work.

    How many spans are queued is obskit's own count (the SDK does not publish it): one
    token per span handed to the SDK, in a deque of the queue's size (full, it drops its
    oldest as the SDK's queue does), one taken off per span of each batch the SDK exports.

    Its :class:`GuardedExporter` encodes each batch in slices with pauses between them
    (:mod:`obskit._traces.paced_export`): the export thread never holds the GIL for
    long while requests are served. ``force_flush()`` and ``shutdown()`` export without
    pauses, a batch already under way included, so a flush is as fast as before; so does
    the export while the queue is over half full, so pacing never costs a span.
    """

    def __init__(
        self,
        span_exporter: SpanExporter,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
        export_timeout_millis: float | None = None,
    ) -> None:
        size = _max_queue_size(max_queue_size)
        #: One token per span in the SDK's queue.
        self._queued: collections.deque[None] = collections.deque(maxlen=max(size, 1))
        super().__init__(
            _Dequeued(span_exporter, self._queued),
            max_queue_size,
            schedule_delay_millis,
            max_export_batch_size,
            export_timeout_millis,
        )
        self._guard = span_exporter if isinstance(span_exporter, GuardedExporter) else None
        # Paced (see paced_export) until the queue is half full: then at full speed.
        half = max(size // 2, 1)
        waiting = self._queued
        self._pacer = Pacer(lambda: len(waiting) >= half)
        if self._guard is not None:
            self._guard.pacer = self._pacer
        if hasattr(os, "register_at_fork"):  # the SDK empties its queue in a forked child
            queued = weakref.ref(self._queued)

            def forget() -> None:
                tokens = queued()
                if tokens is not None:
                    tokens.clear()

            os.register_at_fork(after_in_child=forget)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export every queued span now, without pauses."""
        token = self._pacer.hurry()
        try:
            return super().force_flush(timeout_millis)
        finally:
            self._pacer.done(token)

    def shutdown(self) -> None:
        """Export what is queued without pauses and stop (as the SDK's processor)."""
        self._pacer.hurry()  # for good: nothing is paced after shutdown
        super().shutdown()  # type: ignore[no-untyped-call]  # untyped upstream

    @property
    def queued(self) -> int:
        """How many ended spans wait in the queue for export (obskit's count)."""
        return len(self._queued)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if not (context and context.trace_flags.sampled):
            return
        queued = self._queued
        if queued:
            guard = self._guard
            if guard is not None and guard.down:
                _self_stats.add("obskit_dropped", signal="traces", reason="export_failed")
                return
            if len(queued) == queued.maxlen:
                _self_stats.add("obskit_dropped", signal="traces", reason="queue_full")
        queued.append(None)
        super().on_end(span)
