"""gunicorn's ``WORKER TIMEOUT``: what the worker was doing, as one error line per
request still running, and its spans ended as errors and exported before it exits.

gunicorn's master sends ``SIGABRT`` to a worker that has not checked in for
``--timeout`` seconds; the worker's handler calls the ``worker_abort`` hook (obskit's:
:func:`obskit.integrations.gunicorn.worker_abort`, which calls :func:`report`) in the
main thread, then exits. The master sends ``SIGKILL`` about a second later, so
:func:`report` writes first, then flushes within :data:`FLUSH_SECONDS`.

For every request in the active-span registry (a sync worker has one; a gthread
worker one per busy thread): one ``worker timeout`` error line with its ``trace_id``,
``span_id``, ``http.route``, how long it ran and its stack (for the request the main
thread was serving, the stack it was interrupted in). Its span, and the spans running
inside it, end with status ERROR, ``error.type="worker_timeout"`` and an ``exception``
event holding the stack, so the trace shows where the request hung. With no request
running (a worker stuck starting up), the line carries the main thread's stack.
"""

from __future__ import annotations

import threading
import time
from types import FrameType
from typing import Any

from opentelemetry.trace import Status, StatusCode

from obskit._dumps import active_spans, dump_lines, stacks
from obskit._dumps.active_spans import REQUEST, SPAN, STARTED, TASK, THREAD, Entry
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime

__all__ = ["ERROR_TYPE", "FLUSH_SECONDS", "report"]

#: ``error.type`` of the spans a worker timeout ends.
ERROR_TYPE = "worker_timeout"
#: The most seconds the report spends exporting spans (gunicorn kills the worker soon).
FLUSH_SECONDS = 0.8


def report(interrupted: FrameType | None, timeout: float | None = None) -> int:
    """Report and end every request in flight; return how many (never raises).

    ``interrupted``: the frame the main thread was running when the signal came (its
    stack is the stack of a request served on the main thread); ``timeout``: gunicorn's
    ``--timeout``, added to the lines.
    """
    count = 0
    try:
        count = _report_all(interrupted, timeout)
    except Exception as error:
        _internal_errors.report("dumps", error)
    try:
        telemetry = _runtime.current()
        if telemetry is not None:
            telemetry.force_flush(min(FLUSH_SECONDS, telemetry.settings.shutdown_timeout))
    except Exception as error:
        _internal_errors.report("dumps", error)
    return count


def _report_all(interrupted: FrameType | None, timeout: float | None) -> int:
    entries = active_spans.snapshot()
    infos = stacks.threads()
    me = threading.get_ident()
    extra: dict[str, Any] = {"gunicorn.timeout_s": timeout} if timeout else {}
    requests = [entry for entry in entries if entry[REQUEST] is not None]
    if not requests:
        _report_no_request(interrupted, entries, infos, extra)
        return 0
    for entry in requests:
        if entry[TASK] is None and entry[THREAD] == me and interrupted is not None:
            frames = stacks.thread_frames(interrupted)
        else:
            frames = dump_lines.frames_of(entry, infos)
        running = round(time.perf_counter() - entry[STARTED])
        description = f"worker timeout: the request ran {running} s and gunicorn aborted the worker"
        dump_lines.write_span(
            "error", "worker timeout", "worker_timeout", entry, frames, extra, entries, infos
        )
        _end(entry, entries, description, stacks.format_frames(frames))
    return len(requests)


def _report_no_request(
    interrupted: FrameType | None,
    entries: list[Entry],
    infos: list[stacks.ThreadInfo],
    extra: dict[str, Any],
) -> None:
    me = threading.get_ident()
    info = next((info for info in infos if info.ident == me), None)
    fields: dict[str, Any] = {"dump.id": dump_lines.new_id(), "dump.reason": "worker_timeout"}
    if info is not None:
        fields.update(dump_lines.thread_fields(info))
    mine = active_spans.by_thread(entries).get(me)
    if mine:
        fields.update(dump_lines.span_fields(mine[-1], entries, time.perf_counter()))
    fields.update(extra)
    frame = interrupted if interrupted is not None else (info.frame if info else None)
    fields["stack"] = stacks.format_frames(stacks.thread_frames(frame))
    dump_lines.write("error", "worker timeout", fields)


def _end(request: Entry, entries: list[Entry], description: str, stack: str) -> None:
    """End the spans running inside ``request`` (innermost first), then its own."""
    inside = [
        entry
        for entry in entries
        if entry is not request
        and entry[REQUEST] is None
        and entry[STARTED] >= request[STARTED]
        and (
            (entry[TASK] is not None and entry[TASK] is request[TASK])
            or (entry[TASK] is None and request[TASK] is None and entry[THREAD] == request[THREAD])
            or entry[SPAN].get_span_context().trace_id == request[SPAN].get_span_context().trace_id
        )
    ]
    for entry in reversed(inside):
        try:
            _end_span(entry[SPAN], description, stack)
        except Exception as error:
            _internal_errors.report("dumps", error)
        active_spans.forget(entry)
    server_request = request[REQUEST]
    try:
        server_request.span.add_event("exception", _exception_event(description, stack))
    except Exception as error:
        _internal_errors.report("dumps", error)
    server_request.abandon(ERROR_TYPE, description)


def _exception_event(description: str, stack: str) -> dict[str, str]:
    return {
        "exception.type": "WorkerTimeout",
        "exception.message": description,
        "exception.stacktrace": stack,
    }


def _end_span(span: Any, description: str, stack: str) -> None:
    if not span.is_recording():
        return
    span.set_attribute("error.type", ERROR_TYPE)
    span.add_event("exception", _exception_event(description, stack))
    span.set_status(Status(StatusCode.ERROR, description))
    span.end()
