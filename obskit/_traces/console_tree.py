"""The developer console: finished traces printed as a waterfall tree.

``traces_exporter="console"`` collects a trace's spans until its local root ends,
then prints it once, as an indented tree with each span's offset and duration and a
bar on a shared time axis (the picture of a trace in observability texts). Errors
are marked. Colours are used only when the stream is a terminal.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

#: Traces buffered at most while waiting for their root (oldest dropped beyond).
MAX_TRACES = 1000
_BAR = 32
_NAME = 44
_RED, _CYAN, _DIM, _RESET = "\x1b[31m", "\x1b[36m", "\x1b[2m", "\x1b[0m"


def render_trace(spans: Sequence[ReadableSpan], colors: bool = False) -> str:
    """The waterfall of one trace's spans (children under parents, in start order)."""
    if not spans:
        return ""
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: s.start_time or 0)
    start = min(span.start_time or 0 for span in spans)
    end = max(span.end_time or span.start_time or 0 for span in spans)
    total = max(end - start, 1)
    first = spans[0].context
    trace_id = format(first.trace_id, "032x") if first is not None else "?"
    errors = sum(1 for s in spans if s.status.status_code is StatusCode.ERROR)
    header = f"trace {trace_id}  {total / 1e6:.1f} ms  {len(spans)} spans"
    if errors:
        header += f"  {errors} error{'s' if errors > 1 else ''}"
    lines = [header]

    def walk(span: ReadableSpan, depth: int) -> None:
        offset = (span.start_time or start) - start
        duration = (span.end_time or span.start_time or start) - (span.start_time or start)
        left = int(offset / total * _BAR)
        width = max(1, round(duration / total * _BAR))
        width = min(width, _BAR - left) if left < _BAR else 1
        bar = " " * left + "█" * width + " " * max(0, _BAR - left - width)
        name = ("  " * depth + span.name)[:_NAME].ljust(_NAME)
        failed = span.status.status_code is StatusCode.ERROR
        mark = ""
        if failed:
            mark = "  ✗ " + (span.status.description or "error")
        if colors:
            bar = f"{_RED if failed else _CYAN}{bar}{_RESET}"
            mark = f"{_RED}{mark}{_RESET}" if mark else ""
        lines.append(f"{name} {offset / 1e6:>8.1f} ms |{bar}| {duration / 1e6:>8.1f} ms{mark}")
        for child in children.get(span.context.span_id if span.context else None, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines) + "\n"


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
            stream.write(render_trace(trace_spans, colors=_isatty(stream)))
            stream.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False
