"""A trace's spans as a waterfall that fits a given width.

Each span is a row: its name indented under its parent, its offset from the trace's
start, a bar on the trace's time axis and its duration; errors are marked with their
description. When the trace's spans come from several services (a test or the demo
that runs them in one process), each row names its service after the span's name.
With ``width`` the name column and the bar share what the offset and duration columns
leave, so no row is wider than ``width`` (a long name is cut with
``…``, an error's description goes to a row of its own when it does not fit). Without
it, the columns have the console exporter's fixed widths (name 44, bar 32).

Span names and descriptions (which can carry a request's path or an exception's
message) are shown with their control characters escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from obskit._terminal import escape_controls

#: The fixed layout (no ``width``): the console exporter's columns.
NAME, BAR = 44, 32
#: With a width: the narrowest and widest bar, the narrowest name column.
MIN_BAR, MAX_BAR, MIN_NAME = 12, 48, 16
#: What the offset and duration columns and the separators take: `` {8} ms |`` + ``| {8} ms``.
_FIXED = 14 + 13
_RED, _CYAN, _RESET = "\x1b[31m", "\x1b[36m", "\x1b[0m"


def render(
    spans: Sequence[ReadableSpan],
    colors: bool = False,
    width: int | None = None,
    highlight: Callable[[str], str] | None = None,
) -> str:
    """The waterfall of one trace's spans (children under parents, in start order).

    ``highlight`` dresses the trace id in the header line (e.g. in bold).
    """
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
    shown_id = highlight(trace_id) if highlight is not None else trace_id
    facts = f"{total / 1e6:.1f} ms  {len(spans)} span{'s' * (len(spans) > 1)}"
    if errors:
        facts += f"  {errors} error{'s' if errors > 1 else ''}"
    header = f"trace {shown_id}  {facts}"
    if width is not None and len(f"trace {trace_id}  {facts}") > width:
        header = f"trace {shown_id}\n  {facts}"  # too narrow for one line
    rows: list[tuple[ReadableSpan, str]] = []
    several = len({_service(span) for span in spans}) > 1

    shown: set[int] = set()

    def walk(span: ReadableSpan, depth: int) -> None:
        if id(span) in shown:  # (spans that repeat ids must not make a cycle)
            return
        shown.add(id(span))
        label = escape_controls(span.name)
        if several:  # spans of several services reached this process: say whose each is
            label += f" ({escape_controls(_service(span))})"
        rows.append((span, "  " * depth + label))
        for child in children.get(span.context.span_id if span.context else None, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    name_width, bar_width = _columns([label for _, label in rows], width)
    lines = [header]
    for span, label in rows:
        offset = (span.start_time or start) - start
        duration = (span.end_time or span.start_time or start) - (span.start_time or start)
        left = int(offset / total * bar_width)
        size = max(1, round(duration / total * bar_width))
        size = min(size, bar_width - left) if left < bar_width else 1
        bar = " " * left + "█" * size + " " * max(0, bar_width - left - size)
        if len(label) > name_width:
            label = label[: name_width - 1] + "…" if width is not None else label[:name_width]
        row = f"{label:<{name_width}} {offset / 1e6:>8.1f} ms |"
        tail = f"| {duration / 1e6:>8.1f} ms"
        failed = span.status.status_code is StatusCode.ERROR
        mark = "  ✗ " + escape_controls(span.status.description or "error") if failed else ""
        below = ""
        if mark and width is not None:
            room = width - len(row) - bar_width - len(tail)
            if len(mark) > room:  # on a row of its own, under the span's name
                indent = " " * (len(label) - len(label.lstrip(" ")) + 2)
                mark, below = "", _cut(f"{indent}✗ {mark[4:]}", width)
        if colors:
            bar = f"{_RED if failed else _CYAN}{bar}{_RESET}"
            mark = f"{_RED}{mark}{_RESET}" if mark else ""
            below = f"{_RED}{below}{_RESET}" if below else ""
        lines.append(row + bar + tail + mark)
        if below:
            lines.append(below)
    return "\n".join(lines) + "\n"


def _service(span: ReadableSpan) -> str:
    """The ``service.name`` of the resource ``span`` came with (``?`` if none)."""
    resource = span.resource
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name) if name is not None else "?"


def _columns(labels: list[str], width: int | None) -> tuple[int, int]:
    """The name column's and the bar's widths for ``width`` (or the fixed layout)."""
    if width is None:
        return NAME, BAR
    longest = max(len(label) for label in labels)
    room = max(width - _FIXED, MIN_NAME + MIN_BAR)
    name = min(max(longest, MIN_NAME), room - MIN_BAR)
    return name, min(MAX_BAR, room - name)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
