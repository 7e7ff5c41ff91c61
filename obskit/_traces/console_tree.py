"""The developer console: finished traces printed as a waterfall tree.

``traces_exporter="console"`` collects a trace's spans until its local root ends,
then prints it once, as an indented tree with each span's offset and duration and a
bar on a shared time axis (the picture of a trace in observability texts). Errors
are marked. Colours are used only when the stream is a terminal. Span names and
status descriptions (which can carry a request's path or an exception's message) are
shown with their control characters escaped: they cannot break the tree into forged
lines or send terminal escape sequences. On a terminal the tree fits its width.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from obskit._traces import waterfall

#: Traces buffered at most while waiting for their root (oldest dropped beyond).
MAX_TRACES = 1000


class ConsoleTreeExporter(SpanExporter):
    """Prints each trace as a tree when its local root span ends."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        finished: list[list[ReadableSpan]] = []
        with self._lock:
            for span in spans:
                if span.context is None:
                    continue
                trace_spans = self._pending.setdefault(span.context.trace_id, [])
                trace_spans.append(span)
                if span.parent is None or span.parent.is_remote:
                    finished.append(self._pending.pop(span.context.trace_id))
            while len(self._pending) > MAX_TRACES:
                self._pending.popitem(last=False)
        for trace_spans in finished:
            stream = self._out or sys.stderr
            on_terminal = _isatty(stream)
            width = shutil.get_terminal_size().columns if on_terminal else None
            stream.write(waterfall.render(trace_spans, colors=on_terminal, width=width))
            stream.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False
