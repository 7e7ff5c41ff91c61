"""Stuck spans: any request, ``@traced`` call or ``obskit.span()`` block still running
``stuck_after`` seconds after it started is written once, as a ``stuck span`` warning
line with its trace id, route and stack, and counted in ``obskit_stuck_spans_total``.

The check runs on the dump thread every :func:`interval` seconds and reads only the
active-span registry (a dict copy): a process where nothing is stuck pays nothing per
request for it. A span is reported once, however long it then runs; nested spans that
are all stuck are each reported (each has its own id and start).
"""

from __future__ import annotations

import time
from typing import Any

from obskit._dumps import active_spans, dump_lines, stacks
from obskit._dumps.active_spans import TASK, THREAD, Entry
from obskit._lifecycle import internal_errors as _internal_errors

__all__ = ["METRIC", "Watchdog", "interval", "stuck_counter"]

#: The counter of stuck spans (exposed as ``obskit_stuck_spans_total``).
METRIC = "obskit_stuck_spans"


def interval(stuck_after: float) -> float:
    """Seconds between two checks: a tenth of the threshold, within [0.05, 1]."""
    return min(1.0, max(0.05, stuck_after / 10))


def stuck_counter() -> Any:
    """``obskit_stuck_spans_total`` in obskit's registry (defined on first use)."""
    from obskit._metrics.registry import ObskitCounter, store

    return store().define(
        "counter",
        ObskitCounter,
        METRIC,
        "Requests, @traced calls and obskit.span() blocks that ran longer than stuck_after"
        " (each counted once, when it crosses the threshold).",
        (),
        None,
    )


class Watchdog:
    """Reports the spans of the registry older than ``stuck_after`` seconds, once each."""

    def __init__(self, stuck_after: float) -> None:
        self.stuck_after = stuck_after
        self.interval = interval(stuck_after)
        #: ``id()`` of every entry reported, while it is still active.
        self._reported: set[int] = set()

    def check(self) -> int:
        """Report every span that got stuck since the last check; return how many."""
        entries = active_spans.snapshot()
        active = {id(entry) for entry in entries}
        self._reported &= active  # ended spans: forget them (their ids may be reused)
        deadline = time.perf_counter() - self.stuck_after
        stuck = [
            entry
            for entry in entries
            if entry[active_spans.STARTED] <= deadline and id(entry) not in self._reported
        ]
        if not stuck:
            return 0
        infos = stacks.threads()
        gone = _forget_the_gone(entries, infos)
        stuck = [entry for entry in stuck if id(entry) not in gone]
        if not stuck:
            return 0
        for entry in stuck:
            self._reported.add(id(entry))
            try:
                self._report(entry, entries, infos)
            except Exception as error:
                _internal_errors.report("dumps", error)
        try:
            stuck_counter().inc(len(stuck))
        except Exception as error:
            _internal_errors.report("dumps", error)
        return len(stuck)

    def _report(self, entry: Entry, entries: list[Entry], infos: list[stacks.ThreadInfo]) -> None:
        frames = dump_lines.frames_of(entry, infos)
        dump_lines.write_span(
            "warning",
            "stuck span",
            "stuck",
            entry,
            frames,
            {"stuck_after_s": self.stuck_after},
            entries,
            infos,
        )


def _forget_the_gone(entries: list[Entry], infos: list[stacks.ThreadInfo]) -> set[int]:
    """Drop the entries whose thread has ended or whose task is done without leaving
    them (nothing runs them any more); return their ids."""
    alive = {info.ident for info in infos}
    gone = set()
    for entry in entries:
        task = entry[TASK]
        if entry[THREAD] not in alive if task is None else _done(task):
            active_spans.forget(entry)
            gone.add(id(entry))
    return gone


def _done(task: Any) -> bool:
    try:
        return bool(task.done())
    except Exception:
        return False
