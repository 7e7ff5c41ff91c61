"""``obskit.context.ThreadPoolExecutor``: a thread pool that carries the caller's context."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

R = TypeVar("R")


class ContextThreadPoolExecutor(futures.ThreadPoolExecutor):
    """A drop-in ``ThreadPoolExecutor`` whose tasks run in a copy of the submitter's context.

    Trace context and bound log fields follow each task into its worker thread, and
    whatever a task binds stays in that task: the next task on the same thread starts
    from its own submitter's context.
    """

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> futures.Future[R]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)
