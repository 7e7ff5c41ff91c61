"""The stacks of threads and asyncio tasks, found and formatted (bounded).

A thread's stack is its current frame and the frames it was called from
(``sys._current_frames()``). A task's stack is the chain of coroutines it awaits,
outermost first: a suspended coroutine's frame does not link to the one it awaits, so
the chain is followed through ``cr_await`` (``gi_yieldfrom`` for generator-based
coroutines, ``ag_await`` for async generators). A task that is running right now is
executing on its loop's thread: its stack is taken from that thread, from the task's
outermost coroutine down to the frame being executed.

Stacks are formatted as Python prints a traceback (most recent call last, with each
line's source), at most :data:`MAX_FRAMES` frames: the innermost ones, which say what
the thread is doing; the frames left out are counted on the first line.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

__all__ = [
    "MAX_FRAMES",
    "ThreadInfo",
    "format_frames",
    "running_loops",
    "task_frames",
    "thread_frames",
    "threads",
]

#: The most frames a formatted stack shows (the innermost ones).
MAX_FRAMES = 50
#: The most links followed in one stack (a frame chain or a task's await chain).
MAX_DEPTH = 2000


class ThreadInfo:
    """One thread: its ident, name, native id, whether it is the main thread or a
    daemon, and its current frame."""

    __slots__ = ("daemon", "frame", "ident", "main", "name", "native_id")

    def __init__(
        self,
        ident: int,
        frame: FrameType,
        thread: threading.Thread | None,
    ) -> None:
        self.ident = ident
        self.frame = frame
        self.name = thread.name if thread is not None else "(not started by threading)"
        self.native_id = getattr(thread, "native_id", None)
        self.daemon = thread.daemon if thread is not None else None
        self.main = thread is threading.main_thread()
        if self.main and sys.platform.startswith("linux"):
            # (threading keeps the main thread's id from before a fork: a worker's is its pid)
            self.native_id = os.getpid()


def threads() -> list[ThreadInfo]:
    """Every thread running Python code now, the main thread first."""
    frames = sys._current_frames()
    known = {thread.ident: thread for thread in threading.enumerate()}
    found = [ThreadInfo(ident, frame, known.get(ident)) for ident, frame in frames.items()]
    found.sort(key=lambda info: (not info.main, info.name))
    return found


def thread_frames(frame: FrameType | None) -> list[FrameType]:
    """``frame`` and the frames that called it, outermost first."""
    chain: list[FrameType] = []
    while frame is not None and len(chain) < MAX_DEPTH:
        chain.append(frame)
        frame = frame.f_back
    chain.reverse()
    return chain


def _frame_of(awaitable: Any) -> FrameType | None:
    for name in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(awaitable, name, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited_by(awaitable: Any) -> Any:
    for name in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, name, None)
        if inner is not None:
            return inner
    return None


def task_frames(
    task: Any, thread_stacks: Iterable[ThreadInfo] = ()
) -> tuple[list[FrameType], bool]:
    """A task's frames, outermost first, and whether it is running now (then its frames
    are taken from whichever of ``thread_stacks`` is executing it)."""
    coroutine = task.get_coro() if hasattr(task, "get_coro") else None
    outer = _frame_of(coroutine)
    if outer is None:
        return [], False
    if getattr(coroutine, "cr_running", False) or getattr(coroutine, "gi_running", False):
        for info in thread_stacks:
            chain = thread_frames(info.frame)
            for index, frame in enumerate(chain):
                if frame is outer:
                    return chain[index:], True
        return [outer], True
    frames: list[FrameType] = []
    awaitable = coroutine
    while awaitable is not None and len(frames) < MAX_DEPTH:
        inner = _frame_of(awaitable)
        if inner is None:  # a Future, or an awaitable written in C: the end of the chain
            break
        frames.append(inner)
        awaitable = _awaited_by(awaitable)
    return frames, False


def format_frames(frames: list[FrameType]) -> str:
    """``frames`` (outermost first) as a traceback's lines, the innermost
    :data:`MAX_FRAMES` of them; the number left out on a first line."""
    left_out = max(0, len(frames) - MAX_FRAMES)
    summaries = [
        traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name)
        for frame in frames[left_out:]
    ]
    text = "".join(traceback.StackSummary.from_list(summaries).format())
    if left_out:
        text = f"  ... {left_out} outer frames left out\n{text}"
    return text


#: The code of the method an asyncio event loop runs while it runs (pure Python loops).
_RUN_FOREVER: Any = None


def running_loops(thread_stacks: Iterable[ThreadInfo]) -> list[Any]:
    """The asyncio event loops running in ``thread_stacks`` (a loop written in Python:
    found by its ``run_forever`` frame)."""
    global _RUN_FOREVER
    if "asyncio" not in sys.modules:
        return []
    if _RUN_FOREVER is None:
        from asyncio import base_events

        _RUN_FOREVER = base_events.BaseEventLoop.run_forever.__code__
    loops = []
    for info in thread_stacks:
        frame: FrameType | None = info.frame
        depth = 0
        while frame is not None and depth < MAX_DEPTH:
            if frame.f_code is _RUN_FOREVER:
                loop = frame.f_locals.get("self")
                if loop is not None:
                    loops.append(loop)
                break
            frame = frame.f_back
            depth += 1
    return loops
