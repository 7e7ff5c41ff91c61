"""The heap summary of a dump (the ``dump_heap`` setting): object types, and with
``dump_tracemalloc`` the allocation sites and their growth since the last dump.

- ``heap summary``: the :data:`TOP` types with the most bytes among the objects the
  garbage collector tracks (``gc.get_objects()``: containers and class instances;
  strings and numbers are not tracked), each with its count and bytes (``sys.getsizeof``,
  the object itself, not what it refers to). Walking every object holds the GIL: the
  process pauses for about a second per few million objects.
- ``heap allocations`` (only while tracemalloc traces): the :data:`TOP` source lines that
  hold the most memory now, and the :data:`TOP` whose memory grew most since the
  previous dump of this process (from the first dump on).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

from obskit._lifecycle import after_fork

__all__ = ["TOP", "start_tracing", "stop_tracing", "summary"]

#: Rows per table.
TOP = 20

#: Whether obskit started tracemalloc (then it stops it again).
_started_tracing = False
#: Bytes and blocks per allocation site ("file:line") at the previous dump.
_previous: dict[str, tuple[int, int]] | None = None


@after_fork.in_child
def _forget_the_parents_dump() -> None:
    global _previous
    _previous = None


def start_tracing(frames: int) -> None:
    """Start tracemalloc with ``frames`` frames per allocation, unless it already traces."""
    global _started_tracing
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)
        _started_tracing = True


def stop_tracing() -> None:
    """Stop tracemalloc if obskit started it."""
    global _started_tracing, _previous
    if _started_tracing:
        tracemalloc.stop()
        _started_tracing = False
        _previous = None


def summary() -> Iterator[tuple[str, dict[str, Any]]]:
    """The heap lines: ``(event, fields)`` for the types, then the allocation sites."""
    yield "heap summary", _types()
    if tracemalloc.is_tracing():
        yield "heap allocations", _allocations()


def _types() -> dict[str, Any]:
    counts: dict[type, list[int]] = {}
    getsizeof = sys.getsizeof
    total = 0
    objects = gc.get_objects()
    try:
        for item in objects:
            kind = type(item)
            try:
                size = getsizeof(item)
            except Exception:  # a broken __sizeof__
                size = 0
            row = counts.get(kind)
            if row is None:
                counts[kind] = [1, size]
            else:
                row[0] += 1
                row[1] += size
            total += size
    finally:
        del objects
    top = sorted(counts.items(), key=lambda pair: pair[1][1], reverse=True)[:TOP]
    return {
        "heap.objects": sum(row[0] for row in counts.values()),
        "heap.bytes": total,
        "heap.types": [
            {"type": f"{kind.__module__}.{kind.__qualname__}", "count": row[0], "bytes": row[1]}
            for kind, row in top
        ],
    }


def _allocations() -> dict[str, Any]:
    global _previous
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))
    )
    sites: dict[str, tuple[int, int]] = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        sites[f"{frame.filename}:{frame.lineno}"] = (stat.size, stat.count)
    fields: dict[str, Any] = {
        "tracemalloc.traced_bytes": tracemalloc.get_traced_memory()[0],
        "tracemalloc.top": [
            {"site": site, "bytes": size, "count": count}
            for site, (size, count) in sorted(sites.items(), key=lambda i: i[1][0], reverse=True)[
                :TOP
            ]
        ],
    }
    previous, _previous = _previous, sites
    if previous is not None:
        growth = []
        for site in sites.keys() | previous.keys():
            size, count = sites.get(site, (0, 0))
            before_size, before_count = previous.get(site, (0, 0))
            if size != before_size:
                growth.append((site, size - before_size, count - before_count))
        growth.sort(key=lambda row: row[1], reverse=True)
        fields["tracemalloc.growth"] = [
            {"site": site, "bytes": grown, "count": count} for site, grown, count in growth[:TOP]
        ]
    return fields
