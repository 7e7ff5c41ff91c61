"""The sampling profiler: one background thread that, ``hz`` times a second, reads every
thread's Python stack (``sys._current_frames()``) and counts it with the span running on
that thread (or on the asyncio task the thread is running).

It measures wall-clock time: a thread waiting in a system call is sampled where it
waits, which is what makes a slow request slow. obskit's own threads and
OpenTelemetry's export thread are left out; so is the sampler itself.

Samples are aggregated by ``(stack, labels)`` in the current :class:`~.window.Window`;
:meth:`Sampler.take` hands it over and starts the next. Memory is bounded: a window
keeps at most ``max_stacks`` distinct ``(stack, labels)`` keys (later new ones are
counted under :data:`~.window.OVERFLOW_FRAME`), a stack at most :data:`MAX_DEPTH` frames
(the innermost ones), and the per-span record used for slow spans' hot frames at most
:data:`MAX_SPANS` spans of :data:`MAX_SPAN_STACKS` stacks each.

Labels come from the registry of running spans (:mod:`obskit._dumps.active_spans`):
``trace_id`` of the span running on the thread (or task), and ``span_id``, ``span_name``
and ``http.route`` of its trace's *local root* (the request, or the outermost ``@traced``
call), whose ``pyroscope.profile.id`` names the same id; so one request's samples share
one ``span_id``, as Grafana's "traces to profiles" expects. The slow-span hot frames are
kept per innermost span instead.
"""

from __future__ import annotations

import sys
import threading
import time
from asyncio import current_task
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from obskit._dumps import active_spans
from obskit._dumps.active_spans import REQUEST, SPAN, TASK, THREAD, Entry
from obskit._dumps.dump_lines import span_fields
from obskit._dumps.dump_thread import untraced
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._profiles.window import OVERFLOW_FRAME, Frame, Labels, Stack, Window

__all__ = ["MAX_DEPTH", "Sampler", "format_frame"]

#: Frames kept per sampled stack (the innermost); deeper stacks end in TRUNCATED.
MAX_DEPTH = 128
#: Spans whose samples are kept for their hot frames at once.
MAX_SPANS = 1000
#: Distinct stacks kept per span for its hot frames.
MAX_SPAN_STACKS = 64
#: The stack id of samples counted under the overflow frame.
OVERFLOW = -1
#: The frame that ends a stack cut at :data:`MAX_DEPTH`.
TRUNCATED: Frame = ("[truncated]", "", 0)
#: Threads that are obskit's or OpenTelemetry's own (by name prefix): not sampled.
OWN_THREADS = ("obskit", "OtelBatch", "OtelPeriodic")

#: ``code, f_lasti, code, f_lasti, ...`` innermost first, flat (one object per sample);
#: ``None, 0`` marks a stack cut at MAX_DEPTH.
_RawStack = tuple[Any, ...]


def format_frame(frame: Frame) -> str:
    """``function (file:line)``."""
    name, filename, line = frame
    return f"{name} ({filename}:{line})" if filename else name


class Sampler:
    """Samples every thread ``hz`` times a second from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        hz: float = 100.0,
        max_stacks: int = 10_000,
        labels: Callable[[Entry, list[Entry]], dict[str, str]] | None = None,
    ) -> None:
        self.hz = hz
        self.period = 1.0 / hz
        self.period_ns = round(1e9 / hz)
        self.max_stacks = max_stacks
        self._labels_of = labels or span_labels
        #: Keep per-span samples for slow spans' hot frames (False: nothing reads them).
        self.hot_frames = True
        self._lock = threading.Lock()
        #: (stack id, labels) -> samples in this window; stack ids index ``_stacks``.
        self._counts: dict[tuple[int, Labels], int] = {}
        self._stacks: list[_RawStack] = []
        self._stack_ids: dict[_RawStack, int] = {}
        self._thread_names: dict[int | None, str] = {}
        self._overflow = 0
        self._start_ns = time.time_ns()
        #: span id -> {stack id: samples}, for slow spans' hot frames.
        self._spans: dict[int, dict[int, int]] = {}
        self._names: dict[CodeType, tuple[str, str]] = {}
        self._lines: dict[tuple[CodeType, int], int] = {}
        #: id(root entry) -> (the entry, its labels): a root's labels are final once its
        #: route is known (or it has no request), so later samples reuse them.
        self._root_labels: dict[int, tuple[Entry, Labels]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Samples taken, samples folded into the overflow frame, CPU seconds used: not
        #: yet added to obskit's counters (see :meth:`flush_stats`).
        self._pending = [0, 0, 0.0]

    # -- the thread --

    def start(self) -> None:
        """Start sampling (again after :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        thread = threading.Thread(target=self._run, name="obskit-profiler", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sampling (waiting at most ``timeout`` s for the thread)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def running(self) -> bool:
        """Whether the sampling thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def forget_after_fork(self) -> None:
        """In a forked child: the thread is the parent's; drop what it counted."""
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        with self._lock:
            self._counts = {}
            self._stacks, self._stack_ids = [], {}
            self._overflow = 0
            self._spans = {}
            self._start_ns = time.time_ns()
            self._pending = [0, 0, 0.0]

    def _run(self) -> None:
        if sys.version_info[:2] == (3, 11):
            untraced()  # (see obskit._dumps.dump_thread: a traced thread can spin)
        own = threading.get_ident()
        stop = self._stop
        period = self.period
        sleep = time.sleep
        next_tick = time.monotonic()
        while True:
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < 0:  # late (a long pause): no catching up with a burst
                next_tick = time.monotonic()
                delay = 0.0
            # time.sleep: one wake-up in C (Event.wait runs a Condition's Python code);
            # the stop flag is read after each short sleep.
            if delay > 0.05 and stop.wait(delay):
                return
            if delay <= 0.05:
                sleep(delay)
                if stop.is_set():
                    return
            started = time.thread_time()
            try:
                self.sample(own)
            except Exception as error:  # the profiler never takes the app down
                _internal_errors.report("profiles", error)
            used = time.thread_time() - started
            with self._lock:
                self._pending[2] += used

    # -- one sample of every thread --

    def sample(self, skip: int = 0) -> None:
        """Sample every thread once (but ``skip``, a thread ident)."""
        frames = sys._current_frames()
        names = self._thread_names
        if not names.keys() >= frames.keys():
            names = self._thread_names = {t.ident: t.name for t in threading.enumerate()}
        spans = self._spans_by_thread(frames) if active_spans.enabled() else {}
        taken = folded = 0
        with self._lock:
            counts = self._counts
            ids = self._stack_ids
            limit = self.max_stacks
            for ident, frame in frames.items():
                if ident == skip:
                    continue
                name = names.get(ident)
                if name is None:  # (a thread threading does not know: asked once)
                    name = names[ident] = ""
                if name.startswith(OWN_THREADS):
                    continue
                stack = _raw_stack(frame)
                sid = ids.get(stack)  # (the one hash of the long tuple)
                if sid is None and len(ids) < limit:
                    sid = ids[stack] = len(self._stacks)
                    self._stacks.append(stack)
                thread: Labels = (("thread_name", name),)
                labels = thread
                span = spans.get(ident)
                if span is not None:
                    labels = span[1] + thread
                    if sid is not None and span[2]:
                        self._count_for_span(span[0], sid, spans)
                if sid is None:
                    sid = OVERFLOW
                    labels = thread
                    self._overflow += 1
                    folded += 1
                key = (sid, labels)
                if key not in counts and len(counts) >= limit and labels is not thread:
                    key = (sid, thread)  # past the limit the span labels go, the stack stays
                counts[key] = counts.get(key, 0) + 1
                taken += 1
            pending = self._pending
            pending[0] += taken
            pending[1] += folded

    def _spans_by_thread(self, frames: dict[int, FrameType]) -> dict[int, tuple[int, Labels, bool]]:
        """The innermost running span of each thread (for a thread running an asyncio
        task: that task's) as ``(its span id, the labels of its local root, sampled)``."""
        entries = active_spans.snapshot()
        if not entries:
            return {}
        found: dict[int, tuple[int, Labels, bool]] = {}
        innermost: dict[int, Entry] = {}
        for entry in entries:  # oldest first: the last one per thread is the innermost
            if entry[TASK] is None:
                innermost[entry[THREAD]] = entry
        for entry in entries:
            task = entry[TASK]
            if task is None or entry[THREAD] not in frames:
                continue
            try:
                running = current_task(task.get_loop()) is task
            except Exception:  # a closed loop, an object that is not an asyncio task
                running = False
            if running:
                innermost[entry[THREAD]] = entry
        by_id = {entry[SPAN].get_span_context().span_id: entry for entry in entries}
        for ident, entry in innermost.items():
            try:
                context = entry[SPAN].get_span_context()
                labels = self._labels(_local_root(entry, by_id), entries)
            except Exception:
                continue
            found[ident] = (context.span_id, labels, bool(context.trace_flags & 1))
        return found

    def _labels(self, root: Entry, entries: list[Entry]) -> Labels:
        """``root``'s labels, from the cache once they are final."""
        cached = self._root_labels.get(id(root))
        if cached is not None and cached[0] is root:
            return cached[1]
        fields = self._labels_of(root, entries)
        labels = tuple(sorted(fields.items()))
        if root[REQUEST] is None or "http.route" in fields:
            cache = self._root_labels
            if len(cache) >= MAX_SPANS:
                cache.clear()
            cache[id(root)] = (root, labels)
        return labels

    def _count_for_span(self, span_id: int, sid: int, running: dict[int, Any]) -> None:
        """Count a sample of a sampled span for its hot frames (lock held)."""
        if not self.hot_frames:
            return
        spans = self._spans
        stacks = spans.get(span_id)
        if stacks is None:
            if len(spans) >= MAX_SPANS:  # forget spans no longer running, then retry
                live = {span[0] for span in running.values()}
                for ended in [key for key in spans if key not in live]:
                    del spans[ended]
                if len(spans) >= MAX_SPANS:
                    return
            stacks = spans[span_id] = {}
        if sid in stacks:
            stacks[sid] += 1
        elif len(stacks) < MAX_SPAN_STACKS:
            stacks[sid] = 1

    # -- handing over --

    def take(self) -> Window:
        """The samples since the last take (or the start), as a window; a new one begins."""
        now = time.time_ns()
        with self._lock:
            counts, self._counts = self._counts, {}
            overflow, self._overflow = self._overflow, 0
            start, self._start_ns = self._start_ns, now
            stacks = self._stacks
            if len(stacks) >= self.max_stacks // 2:  # new stack ids from here on
                self._stacks, self._stack_ids = [], {}
                self._spans = {}
            elif len(self._spans) >= MAX_SPANS // 2:
                self._forget_ended_spans()
            self._root_labels = {}
            self._thread_names = {}
        window = Window(start, now, self.period_ns, overflow=overflow)
        converted = window.counts
        for (sid, labels), count in counts.items():
            stack = self._frames(stacks[sid]) if sid != OVERFLOW else (OVERFLOW_FRAME,)
            key = (stack, labels)
            converted[key] = converted.get(key, 0) + count
        return window

    def _forget_ended_spans(self) -> None:
        """Drop the hot-frame records of spans no longer running (lock held)."""
        running = {entry[SPAN].get_span_context().span_id for entry in active_spans.snapshot()}
        for span_id in [key for key in self._spans if key not in running]:
            del self._spans[span_id]

    def span_samples(self, span_id: int) -> dict[Stack, int]:
        """The stacks sampled while span ``span_id`` ran, forgotten once read."""
        with self._lock:
            raw = self._spans.pop(span_id, None)
            stacks = self._stacks
        found: dict[Stack, int] = {}
        for sid, count in (raw or {}).items():
            stack = self._frames(stacks[sid])  # (stacks differing in f_lasti only merge)
            found[stack] = found.get(stack, 0) + count
        return found

    def _frames(self, raw: _RawStack) -> Stack:
        names = self._names
        lines = self._lines
        frames: list[Frame] = []
        for index in range(0, len(raw), 2):
            code, line = raw[index], raw[index + 1]  # (line: the frame's f_lasti until here)
            if code is None:
                frames.append(TRUNCATED)
                continue
            named = names.get(code)
            if named is None:
                if len(names) > 4 * self.max_stacks:
                    names.clear()
                named = names[code] = (getattr(code, "co_qualname", code.co_name), code.co_filename)
            where = lines.get((code, line))
            if where is None:
                if len(lines) > 8 * self.max_stacks:
                    lines.clear()
                where = lines[(code, line)] = _line(code, line)
            frames.append((named[0], named[1], where))
        return tuple(frames)

    def flush_stats(self) -> None:
        """Add the samples taken, folded and the CPU time used since the last flush to
        ``obskit_profiler_*`` (the exporting thread calls it each interval)."""
        with self._lock:
            pending, self._pending = self._pending, [0, 0, 0.0]
        if pending[0]:
            _self_stats.add("obskit_profiler_samples", pending[0])
        if pending[1]:
            _self_stats.add("obskit_profiler_overflow_samples", pending[1])
        if pending[2]:
            _self_stats.add("obskit_profiler_seconds", pending[2])


def _line(code: CodeType, lasti: int) -> int:
    """The line of the instruction at byte offset ``lasti`` in ``code``."""
    if lasti < 0:
        return code.co_firstlineno
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


def _local_root(entry: Entry, by_id: dict[int, Entry]) -> Entry:
    """The local root of ``entry``'s span: up its parents while they are running spans
    of this process, to the one without a parent here (a request, an outermost
    ``@traced`` call): the span whose ``pyroscope.profile.id`` names the samples."""
    for _ in range(64):  # (bounded: a parent chain never loops, but stay safe)
        parent = getattr(entry[SPAN], "parent", None)
        if parent is None or parent.is_remote:
            return entry
        above = by_id.get(parent.span_id)
        if above is None:  # its parent is not a running span obskit knows: the outermost
            return entry
        entry = above
    return entry


def _raw_stack(frame: FrameType | None) -> _RawStack:
    """``frame`` and its callers as a flat ``code, f_lasti, ...`` tuple, innermost
    first, at most :data:`MAX_DEPTH` frames (then ``None, 0``)."""
    stack: list[Any] = []
    append = stack.append
    depth = 0
    while frame is not None:
        if depth == MAX_DEPTH:
            append(None)
            append(0)
            break
        append(frame.f_code)
        append(frame.f_lasti)  # (half the cost of f_lineno)
        frame = frame.f_back
        depth += 1
    return tuple(stack)


def span_labels(entry: Entry, related: list[Entry]) -> dict[str, str]:
    """The labels of a sample taken in ``entry``'s span: ``trace_id``, ``span_id``,
    ``span_name`` and ``http.route`` (once the framework knows it)."""
    fields = span_fields(entry, related, 0.0)
    labels = {"trace_id": fields.get("trace_id"), "span_id": fields.get("span_id")}
    labels["span_name"] = fields.get("span.name")
    labels["http.route"] = fields.get("http.route")
    return {key: str(value) for key, value in labels.items() if value}
