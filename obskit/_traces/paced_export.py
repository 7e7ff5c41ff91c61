"""Paced export: a batch is encoded in short slices, the GIL let go between them, so
no request waits behind a batch.

The batch processor's thread encodes a batch of spans (its size check, the OTLP
encoder) in pure Python. In a process with one core and one request thread — a gunicorn
sync worker — a request thread coming back from each blocking call (accept, recv, send,
a log write) then waits for the GIL until the export thread lets it go: at the latest
after the interpreter's switch interval (5 ms), once per blocking call, for as long as
the batch takes (tens of milliseconds for 512 spans). That is the convoy effect, and it
showed as a p99 three to four times that of the same app with its spans discarded.

:class:`PacedSpans` hands a batch to whatever iterates it (obskit's size split, the
exporter's encoder: both walk the spans once, in order) and, each time
:data:`SLICE` seconds have passed since its last pause, sleeps :data:`PAUSE` seconds
before the next span. Sleeping gives the GIL up at once, so a request thread waits at
most one slice; the pause lets a short request run to its end meanwhile. A paced
batch goes in requests of at most :data:`MAX_SPANS` spans (:func:`chunked`, applied to
the requests the byte cap made). The spans and their order are those of the batch;
the export takes about twice its CPU time.

A flush does not wait: while :attr:`Pacer.hurried` (``force_flush()`` or ``shutdown()``
is under way), no pause is made, in a batch started before as well. Nor does a busy
exporter: while its queue is over half full, pausing would cost spans (dropped from a
full queue) rather than save latency, so it exports at full speed. An iteration that
is not a plain ``for`` (indexing, ``len``) is not paced: an exporter that reads its
batch otherwise is slower to let go of the GIL, never wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from opentelemetry.sdk.trace import ReadableSpan

#: Seconds of encoding between two pauses: the longest a request waits for the GIL.
SLICE = 0.0005
#: Seconds each pause lasts.
PAUSE = 0.0005
#: The most spans a paced batch sends in one request. The encoder copies a request's
#: encoded spans into it in one call to protobuf's C library, which no pause can
#: interrupt (about 10 us a span): bounding the request bounds that stretch too.
MAX_SPANS = 128


class Pacer:
    """Whether exports pause between slices now.

    Not while a flush is under way (:meth:`hurry`), nor while ``behind()`` says the
    export falls behind (its queue fills): pausing then would cost spans, not latency.
    """

    __slots__ = ("_behind", "_hurries", "pauses")

    def __init__(self, behind: Callable[[], bool] | None = None) -> None:
        self._behind = behind
        #: How many pauses exports made so far (only the export thread adds to it).
        self.pauses = 0
        # One token per flush under way (list append and remove are atomic under the
        # GIL, and a list holds no lock a fork could leave held).
        self._hurries: list[object] = []

    @property
    def hurried(self) -> bool:
        """True while a flush or shutdown is under way or the export falls behind."""
        if self._hurries:
            return True
        behind = self._behind
        return behind is not None and behind()

    def hurry(self) -> object:
        """Stop pausing until :meth:`done` is called with the token returned."""
        token = object()
        self._hurries.append(token)
        return token

    def done(self, token: object) -> None:
        """End the hurry of ``token`` (from :meth:`hurry`)."""
        self._hurries.remove(token)


class PacedSpans(Sequence[ReadableSpan]):
    """``spans`` as a sequence whose iteration pauses between slices (see the module)."""

    __slots__ = ("_pacer", "_spans")

    def __init__(self, spans: Sequence[ReadableSpan], pacer: Pacer) -> None:
        self._spans = spans
        self._pacer = pacer

    def __len__(self) -> int:
        return len(self._spans)

    @overload
    def __getitem__(self, index: int) -> ReadableSpan: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ReadableSpan]: ...

    def __getitem__(self, index: int | slice) -> ReadableSpan | Sequence[ReadableSpan]:
        return self._spans[index]

    def __iter__(self) -> Iterator[ReadableSpan]:
        pacer = self._pacer
        clock = time.perf_counter
        sleep = time.sleep
        pause_at = clock() + SLICE
        for span in self._spans:
            yield span  # the consumer works on it until it asks for the next one
            if clock() >= pause_at:
                if not pacer.hurried:
                    sleep(PAUSE)
                    pacer.pauses += 1
                pause_at = clock() + SLICE


def chunked(requests: list[list[ReadableSpan]]) -> list[list[ReadableSpan]]:
    """``requests`` in order, each longer than :data:`MAX_SPANS` cut into pieces of that
    many spans (each within the byte cap, as the request it comes from)."""
    most = MAX_SPANS
    if all(len(request) <= most for request in requests):
        return requests
    return [
        request[start : start + most]
        for request in requests
        for start in range(0, len(request), most)
    ]


def paced(spans: Sequence[ReadableSpan], pacer: Pacer | None) -> Sequence[ReadableSpan]:
    """``spans`` paced by ``pacer`` (as they are without one)."""
    if pacer is None or isinstance(spans, PacedSpans):
        return spans
    return PacedSpans(spans, pacer)
