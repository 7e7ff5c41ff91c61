"""Crashes: a stack on stderr at a fatal signal, and unhandled exceptions as error lines
with the trace id of the span they escaped.

- ``faulthandler`` is enabled (all threads, to stderr) unless something enabled it
  already: a segmentation fault, an abort or a fatal Python error leaves every thread's
  stack on stderr, where a crashing process can still write.
- ``sys.excepthook`` (the main thread), ``threading.excepthook`` (other threads) and the
  exception handler of each asyncio event loop whose tasks run spans: each writes one
  ``unhandled exception`` error line (``obskit.crash`` logger) with the exception's
  fields, the thread or task, and ``trace_id``/``span_id``/``span.name`` of the innermost
  obskit span the exception escaped (found in the traceback's frames: by then the span
  has ended), then calls the hook that was there before, so the program ends as it
  would have (the default hooks still print the traceback on stderr; asyncio's default
  handler still logs its own line).

All of it is undone by ``shutdown()``: a hook is put back only if obskit's is still the
installed one.
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from obskit._dumps import active_spans, dump_lines
from obskit._http.methods import span_method
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._logs.pipeline import get_logger
from obskit._traces.ids import hex_ids

__all__ = ["install", "span_of", "uninstall"]

_log = get_logger("obskit.crash")

#: Whether obskit enabled faulthandler (then it disables it again).
_enabled_faulthandler = False
_previous_sys: Any = None
_previous_threading: Any = None
#: The handler each hooked loop had before obskit's (``None``: asyncio's default), by id.
_loop_handlers: dict[int, tuple[Any, Any]] = {}
_MAX_LOOPS = 64
#: Frames of a traceback searched for obskit's span, innermost first.
MAX_FRAMES = 500


def install() -> None:
    """Enable faulthandler and put obskit's hooks in front of the current ones."""
    global _enabled_faulthandler, _previous_sys, _previous_threading
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable(file=_stderr_fd(), all_threads=True)
            _enabled_faulthandler = True
        except (ValueError, OSError, RuntimeError):
            pass
    if sys.excepthook is not _sys_hook:
        _previous_sys = sys.excepthook
        sys.excepthook = _sys_hook
    if threading.excepthook is not _thread_hook:
        _previous_threading = threading.excepthook
        threading.excepthook = _thread_hook
    active_spans.on_new_loop = hook_loop
    if "asyncio" in sys.modules:  # init() inside a running loop (uvicorn imports the app so)
        import asyncio

        with contextlib.suppress(RuntimeError):
            hook_loop(asyncio.get_running_loop())


def uninstall() -> None:
    """Undo :func:`install` where obskit's hooks are still the installed ones."""
    global _enabled_faulthandler, _previous_sys, _previous_threading
    if _enabled_faulthandler:
        with contextlib.suppress(RuntimeError):
            faulthandler.disable()
        _enabled_faulthandler = False
    if sys.excepthook is _sys_hook:
        sys.excepthook = _previous_sys or sys.__excepthook__
    _previous_sys = None
    if threading.excepthook is _thread_hook:
        threading.excepthook = _previous_threading or threading.__excepthook__
    _previous_threading = None
    active_spans.on_new_loop = None
    for loop, previous in list(_loop_handlers.values()):
        with contextlib.suppress(Exception):
            if loop.get_exception_handler() is _loop_hook and not loop.is_closed():
                loop.set_exception_handler(previous)
    _loop_handlers.clear()


def _stderr_fd() -> int:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            return int(stream.fileno())  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            continue
    return 2


def hook_loop(loop: Any) -> None:
    """Put obskit's exception handler in front of ``loop``'s (once per loop)."""
    if id(loop) in _loop_handlers or loop.get_exception_handler() is _loop_hook:
        return
    if len(_loop_handlers) >= _MAX_LOOPS:
        for key, (known, _) in list(_loop_handlers.items()):
            if known.is_closed():
                del _loop_handlers[key]
    _loop_handlers[id(loop)] = (loop, loop.get_exception_handler())
    loop.set_exception_handler(_loop_hook)


def _sys_hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if not issubclass(kind, KeyboardInterrupt):  # Ctrl-C is no crash
        _write("unhandled exception", (kind, error, trace), _thread_fields(threading.main_thread()))
    previous = _previous_sys or sys.__excepthook__
    previous(kind, error, trace)


def _thread_hook(args: Any) -> None:
    if not issubclass(args.exc_type, SystemExit):  # ends a thread quietly, by design
        _write(
            "unhandled exception in thread",
            (args.exc_type, args.exc_value, args.exc_traceback),
            _thread_fields(args.thread),
        )
    previous = _previous_threading or threading.__excepthook__
    previous(args)


def _loop_hook(loop: Any, context: dict[str, Any]) -> None:
    error = context.get("exception")
    fields: dict[str, Any] = {}
    task = context.get("task") or context.get("future")
    if task is not None and hasattr(task, "get_name"):
        with contextlib.suppress(Exception):
            fields["asyncio.task.name"] = task.get_name()
    message = str(context.get("message") or "unhandled exception in event loop")
    exc_info = (
        (type(error), error, error.__traceback__) if isinstance(error, BaseException) else None
    )
    _write(message, exc_info, fields)
    previous = _loop_handlers.get(id(loop), (None, None))[1]
    if previous is not None:
        previous(loop, context)
    else:
        loop.default_exception_handler(context)


def _thread_fields(thread: threading.Thread | None) -> dict[str, Any]:
    if thread is None:
        return {}
    fields: dict[str, Any] = {"thread.id": thread.ident, "thread.name": thread.name}
    if thread is threading.main_thread():
        fields["thread.main"] = True
    return fields


def _write(
    event: str,
    exc_info: tuple[Any, BaseException | None, TracebackType | None] | None,
    fields: dict[str, Any],
) -> None:
    """The crash line (never raises: the program's own ending comes next)."""
    try:
        trace = exc_info[2] if exc_info is not None else None
        fields.update(span_of(trace))
        if exc_info is not None:
            fields["exc_info"] = exc_info
        dump_lines.write("error", event, fields, _log)
    except Exception as error:
        with contextlib.suppress(Exception):
            _internal_errors.report("dumps", error)


def span_of(trace: TracebackType | None) -> dict[str, Any]:
    """``trace_id``/``span_id``/``span.name`` of the innermost obskit span an exception
    with traceback ``trace`` escaped; else of the span current here; else nothing."""
    frames: list[FrameType] = []
    while trace is not None and len(frames) < MAX_FRAMES:
        frames.append(trace.tb_frame)
        trace = trace.tb_next
    for frame in reversed(frames):
        if not str(frame.f_globals.get("__name__", "")).startswith("obskit."):
            continue
        found = _span_in(frame)
        if found:
            return found
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if context.is_valid:
        _, trace_id, span_id = hex_ids(context)
        return {"trace_id": trace_id, "span_id": span_id}
    return {}


def _span_in(frame: FrameType) -> dict[str, Any]:
    """The span an obskit frame (a ``@traced`` wrapper, a request's middleware) held."""
    local = frame.f_locals
    span = local.get("span")
    name = None
    site = local.get("site")
    if site is not None:
        name = getattr(site, "span_name", None)
    if span is None or not hasattr(span, "get_span_context"):
        state = local.get("state")
        span = getattr(state, "span", None)
        method = getattr(state, "method", None)
        if span is not None and method is not None:
            route = getattr(state, "route", None)
            method = span_method(method)
            name = f"{method} {route}" if route else method
    if span is None or not hasattr(span, "get_span_context"):
        return {}
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    _, trace_id, span_id = hex_ids(context)
    found: dict[str, Any] = {"trace_id": trace_id, "span_id": span_id}
    if name:
        found["span.name"] = name
    return found
