"""The spans running right now, per thread and per asyncio task.

A server request (:class:`~obskit._http.server_request.ServerRequest`), an ``@traced``
call and an ``obskit.span()`` block each *enter* an entry when their span starts and
*leave* it when the span ends. An entry is one tuple, kept in one dict under its own
``id()`` (the key :func:`enter` returns): entering costs a tuple and a dict set, leaving
is the dict's own ``pop`` (no Python frame), and nothing else happens per call. Every
reader (a dump, the stuck-span watchdog, gunicorn's worker-timeout report, a sampling
profiler) copies the dict and groups what it needs.

Which thread or task an entry belongs to:

- synchronous code (``@traced`` functions, ``obskit.span()`` blocks, WSGI requests): the
  calling thread, whose stack holds the code while it runs;
- coroutines (``@traced`` ``async def``, ASGI requests, ``async with obskit.span()``): the
  asyncio task running them, which may be suspended while its span is open.

Generator and async-generator spans are not entered: their code runs only between the
consumer's steps, so no thread or task holds it while the span is open.
"""

from __future__ import annotations

import threading
from asyncio import _get_running_loop  # (in asyncio.__all__: the loop-agnostic lookup)
from asyncio import current_task as _current_task
from collections.abc import Callable
from typing import Any, Final

from obskit._lifecycle import after_fork

__all__ = [
    "NAME",
    "REQUEST",
    "SPAN",
    "STARTED",
    "TASK",
    "THREAD",
    "Entry",
    "enter",
    "enter_request",
    "enter_task",
    "leave",
    "snapshot",
    "switch",
]

#: ``(span, name, request, started, thread ident, task)``: the span; its name (``None``
#: for a request, whose name is its method and route once routed); the request
#: (``ServerRequest``) or ``None``; when it started (``time.perf_counter()`` seconds); the
#: thread that entered it; the asyncio task that entered it (``None``: a thread's entry).
Entry = tuple[Any, Any, Any, float, int, Any]
SPAN: Final = 0
NAME: Final = 1
REQUEST: Final = 2
STARTED: Final = 3
THREAD: Final = 4
TASK: Final = 5

_active: dict[int, Entry] = {}
_on = False
_get_ident = threading.get_ident
_pop = _active.pop

#: ``leave(key, None)``: the span entered under ``key`` has ended (``key`` 0: nothing was
#: entered). The dict's own ``pop``, so leaving runs no Python code.
leave = _active.pop

#: Called with each event loop the first time one of its tasks enters a span (the crash
#: hooks set the loop's exception handler); ``None``: nothing to do.
on_new_loop: Callable[[Any], None] | None = None
#: The loop that last entered a span (so a new one is noticed with one comparison).
_last_loop: Any = None


def switch(on: bool) -> None:
    """Enter spans from now on (``True``) or not; switching off forgets every entry."""
    global _on
    _on = on
    if not on:
        _active.clear()


def enabled() -> bool:
    """Whether spans are entered."""
    return _on


@after_fork.in_child
def _forget_the_parents_spans() -> None:
    # They ran in the parent's threads; the forking thread's own leave() finds nothing.
    global _last_loop
    _active.clear()
    _loops.clear()
    _last_loop = None


def enter(span: Any, name: str, started: float) -> int:
    """Synchronous code: ``span`` (named ``name``) runs on this thread from ``started``.

    Returns the key for :data:`leave` (0 when off or without a span).
    """
    if not _on or span is None:
        return 0
    entry = (span, name, None, started, _get_ident(), None)
    key = id(entry)
    _active[key] = entry
    return key


def enter_task(span: Any, name: str, started: float) -> int:
    """A coroutine: ``span`` runs in the current asyncio task (0 outside one: an event
    loop other than asyncio's)."""
    if not _on or span is None:
        return 0
    loop = _get_running_loop()
    if loop is None:
        return 0
    if loop is not _last_loop:
        _note_loop(loop)
    entry = (span, name, None, started, _get_ident(), _current_task(loop))
    key = id(entry)
    _active[key] = entry
    return key


def enter_request(span: Any, request: Any, started: float) -> int:
    """A server request: in the current asyncio task when an event loop runs this code
    (ASGI), else on this thread (WSGI)."""
    if not _on:
        return 0
    loop = _get_running_loop()
    if loop is None:
        task = None
    else:
        if loop is not _last_loop:
            _note_loop(loop)
        task = _current_task(loop)
    entry = (span, None, request, started, _get_ident(), task)
    key = id(entry)
    _active[key] = entry
    return key


def snapshot() -> list[Entry]:
    """Every entry now, oldest first."""
    entries = list(_active.copy().values())  # (one C call: atomic against the callers)
    entries.sort(key=_started)
    return entries


def _started(entry: Entry) -> float:
    return entry[STARTED]


def forget(entry: Entry) -> None:
    """Drop ``entry`` (its thread or task is gone without leaving it)."""
    _pop(id(entry), None)


def _note_loop(loop: Any) -> None:
    global _last_loop
    _last_loop = loop
    _loops[id(loop)] = loop
    if len(_loops) > _MAX_LOOPS:  # closed loops of many asyncio.run() calls
        for key, known in list(_loops.items()):
            if known.is_closed():
                del _loops[key]
    callback = on_new_loop
    if callback is not None:
        try:
            callback(loop)
        except Exception:  # a hook that fails must not cost the span
            from obskit._lifecycle import internal_errors as _internal_errors

            _internal_errors.count("dumps")


#: Event loops whose tasks entered spans (for dumps that list every task), by id.
_loops: dict[int, Any] = {}
_MAX_LOOPS = 64


def known_loops() -> list[Any]:
    """The event loops, not closed, whose tasks have entered spans."""
    return [loop for loop in list(_loops.values()) if not loop.is_closed()]


def by_thread(entries: list[Entry]) -> dict[int, list[Entry]]:
    """The threads' entries (tasks' entries left out), oldest first, by thread ident."""
    found: dict[int, list[Entry]] = {}
    for entry in entries:
        if entry[TASK] is None:
            found.setdefault(entry[THREAD], []).append(entry)
    return found


def by_task(entries: list[Entry]) -> dict[Any, list[Entry]]:
    """The tasks' entries, oldest first, by task."""
    found: dict[Any, list[Entry]] = {}
    for entry in entries:
        task = entry[TASK]
        if task is not None:
            found.setdefault(task, []).append(entry)
    return found
