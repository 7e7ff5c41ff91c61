"""The JSON lines of a dump: one per thread, one per asyncio task, and a last line that
counts them; and the line of one span (stuck, or cut short by gunicorn).

Every line is written by the ``obskit.dumps`` logger through obskit's log pipeline (the
non-blocking writer), with ``dump.id`` (the lines of one dump share it),
``dump.reason`` (``signal``, ``endpoint``, ``stuck``, ``worker_timeout``),
``process.pid``, the thread (``thread.id``, ``thread.name``, ``thread.native_id``) or the
task (``asyncio.task.name``, ``asyncio.task.state``), its ``stack`` (a traceback's text,
most recent call last) and, when a span runs on that thread or task: ``trace_id``,
``span_id`` and ``span.name`` of the innermost one, ``http.route`` (once the framework
knows it), ``http.request.method`` and ``url.path`` of its request, and ``running_ms``,
how long the span has run.

Lines are written in an empty trace context, so their ids are the dumped span's, never
the ids of whatever span is current where the dump is written.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from opentelemetry import context as otel_context

from obskit._dumps import active_spans, stacks
from obskit._dumps.active_spans import NAME, REQUEST, SPAN, STARTED, TASK, THREAD, Entry
from obskit._http.methods import span_method
from obskit._lifecycle import after_fork
from obskit._logs.pipeline import get_logger
from obskit._traces.ids import hex_ids

__all__ = ["span_fields", "write", "write_dump", "write_span"]

_log = get_logger("obskit.dumps")
#: Held while a dump is written, so the lines of two dumps never interleave.
_lock = threading.Lock()
#: How long a dump waits for another one to finish before it is skipped.
LOCK_SECONDS = 5.0


@after_fork.in_child
def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()


def new_id() -> str:
    """A dump id: 8 hex digits from the operating system's random source."""
    return os.urandom(4).hex()


def write(level: str, event: str, fields: dict[str, Any], logger: Any = None) -> None:
    """One line from ``logger`` (the ``obskit.dumps`` logger), in an empty trace context."""
    token = otel_context.attach(otel_context.Context())
    try:
        getattr(logger or _log, level)(event, **fields)
    finally:
        otel_context.detach(token)


def _request_of(entry: Entry, related: list[Entry]) -> Any:
    """The request ``entry`` belongs to: its own, else one of ``related`` (same thread
    or task first) in the same trace."""
    request = entry[REQUEST]
    if request is not None:
        return request
    trace_id = entry[SPAN].get_span_context().trace_id
    for other in related:
        if other[REQUEST] is not None and other[SPAN].get_span_context().trace_id == trace_id:
            return other[REQUEST]
    return None


def span_fields(entry: Entry, related: list[Entry], now: float) -> dict[str, Any]:
    """The fields naming ``entry``'s span: ids, name, its request's route and method, and
    how long it has run (``related``: entries where its request may be found)."""
    fields: dict[str, Any] = {}
    context = entry[SPAN].get_span_context()
    if context.is_valid:
        _, fields["trace_id"], fields["span_id"] = hex_ids(context)
    request = _request_of(entry, related)
    name = entry[NAME]
    if request is not None:
        route = request.route_now()
        if name is None:
            method = span_method(request.method)
            name = f"{method} {route}" if route else method
        if route:
            fields["http.route"] = route
        fields["http.request.method"] = request.method
        fields["url.path"] = request.path
    fields["span.name"] = name
    fields["running_ms"] = round((now - entry[STARTED]) * 1000)
    return fields


def thread_fields(info: stacks.ThreadInfo) -> dict[str, Any]:
    """The fields naming a thread (``thread.id`` is ``threading.get_ident()``, which
    faulthandler prints in hex)."""
    fields: dict[str, Any] = {"thread.id": info.ident, "thread.name": info.name}
    if info.native_id is not None:
        fields["thread.native_id"] = info.native_id
    if info.main:
        fields["thread.main"] = True
    return fields


def task_fields(task: Any, running: bool) -> dict[str, Any]:
    """The fields naming an asyncio task."""
    try:
        name = task.get_name()
    except Exception:
        name = repr(task)[:200]
    return {"asyncio.task.name": name, "asyncio.task.state": "running" if running else "pending"}


def _tasks(infos: list[stacks.ThreadInfo]) -> list[Any]:
    if "asyncio" not in sys.modules:
        return []
    import asyncio

    loops = {id(loop): loop for loop in stacks.running_loops(infos)}
    for loop in active_spans.known_loops():
        loops.setdefault(id(loop), loop)
    found: list[Any] = []
    for loop in loops.values():
        try:
            found.extend(asyncio.all_tasks(loop))
        except Exception:  # a loop closing meanwhile: its tasks are gone
            continue
    return found


def write_dump(reason: str, heap: bool = False) -> dict[str, Any]:
    """Write a dump of every thread and task (and the heap summary when ``heap``);
    return what the last line says (``dump.id``, ``threads``, ``tasks``)."""
    if not _lock.acquire(timeout=LOCK_SECONDS):
        return {}
    try:
        return _write_dump(reason, heap)
    finally:
        _lock.release()


def _write_dump(reason: str, heap: bool) -> dict[str, Any]:
    started = time.perf_counter()
    dump_id = new_id()
    base = {"dump.id": dump_id, "dump.reason": reason, "process.pid": os.getpid()}
    infos = stacks.threads()
    entries = active_spans.snapshot()
    threads = active_spans.by_thread(entries)
    now = time.perf_counter()
    for info in infos:
        fields = {**base, **thread_fields(info)}
        mine = threads.get(info.ident)
        if mine:
            fields.update(span_fields(mine[-1], mine + entries, now))
        fields["stack"] = stacks.format_frames(stacks.thread_frames(info.frame))
        write("warning", "thread stack", fields)
    tasks = _tasks(infos)
    by_task = active_spans.by_task(entries)
    for task in tasks:
        frames, running = stacks.task_frames(task, infos)
        fields = {**base, **task_fields(task, running)}
        mine = by_task.get(task)
        if mine:
            fields.update(span_fields(mine[-1], mine + entries, now))
        fields["stack"] = stacks.format_frames(frames)
        write("warning", "task stack", fields)
    if heap:
        from obskit._dumps import heap as _heap

        for event, heap_fields in _heap.summary():
            write("warning", event, {**base, **heap_fields})
    summary = {
        **base,
        "threads": len(infos),
        "tasks": len(tasks),
        "spans": len(entries),
        "dump.duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    write("warning", "dump written", summary)
    return summary


def write_span(
    level: str,
    event: str,
    reason: str,
    entry: Entry,
    frames: list[Any],
    extra: dict[str, Any],
    entries: list[Entry],
    infos: list[stacks.ThreadInfo],
) -> None:
    """One line for ``entry``'s span: where it runs (its thread or task), ``frames`` as
    its stack, and ``extra`` fields."""
    fields: dict[str, Any] = {
        "dump.id": new_id(),
        "dump.reason": reason,
        "process.pid": os.getpid(),
    }
    task = entry[TASK]
    if task is None:
        info = next((info for info in infos if info.ident == entry[THREAD]), None)
        if info is not None:
            fields.update(thread_fields(info))
        else:
            fields["thread.id"] = entry[THREAD]
    else:
        coroutine = task.get_coro() if hasattr(task, "get_coro") else None
        fields.update(task_fields(task, bool(getattr(coroutine, "cr_running", False))))
    fields.update(span_fields(entry, entries, time.perf_counter()))
    fields.update(extra)
    fields["stack"] = stacks.format_frames(frames)
    write(level, event, fields)


def frames_of(entry: Entry, infos: list[stacks.ThreadInfo]) -> list[Any]:
    """The stack ``entry``'s span runs on now: its thread's, or its task's."""
    task = entry[TASK]
    if task is not None:
        return stacks.task_frames(task, infos)[0]
    for info in infos:
        if info.ident == entry[THREAD]:
            return stacks.thread_frames(info.frame)
    return []
