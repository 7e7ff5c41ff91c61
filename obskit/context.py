"""Request-scoped log fields and carrying the trace context into other threads.

Bound fields and the OpenTelemetry context both live in ``contextvars``, so they
follow ``await`` within a task on their own. A new thread starts with an *empty*
context: a function run in a thread pool sees neither unless it is wrapped. Use
``wrap()`` or ``ThreadPoolExecutor`` to carry them over; without either, a
thread may miss the ids, but never shows another request's.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from obskit._lifecycle.lazy_api import bind, unbind

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["ThreadPoolExecutor", "bind", "bound", "clear", "unbind", "wrap"]


def clear() -> None:
    """Remove every bound field (integrations call this at the start of each request)."""
    import structlog.contextvars

    structlog.contextvars.clear_contextvars()


def bound() -> dict[str, Any]:
    """The fields bound in the current context."""
    import structlog.contextvars

    return structlog.contextvars.get_contextvars()


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """Return ``fn`` bound to the *current* context (trace context and bound fields).

    Each call runs in a fresh copy of the context captured now, so calls running at
    once in several threads never share, or leak into, each other's context.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return run


def __getattr__(name: str) -> Any:
    # Built on first use so `import obskit` does not import concurrent.futures.
    if name == "ThreadPoolExecutor":
        from obskit._traces.context_executor import ContextThreadPoolExecutor

        return ContextThreadPoolExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
