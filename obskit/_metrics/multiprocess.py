"""Multi-process metrics (gunicorn workers): one ``/metrics`` for all, exemplars included.

prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) keeps each
worker's values in mmap files and merges them at scrape time, but has no exemplars.
obskit adds:

- **an exemplar store per worker**: ``exemplars_<pid>.obskit`` in the same directory,
  a small mmap file of fixed 512-byte records, one per histogram bucket series, each
  holding the latest exemplar (trace id, span id, value, timestamp). A worker
  overwrites its records in place; a scrape reads every worker's file and, per
  bucket, keeps the newest exemplar. (The extension is not ``.db`` so that
  prometheus-client's collector never reads these files.)
- **compaction**: when a worker dies, its counter/histogram/summary files and its
  non-live gauge files are merged into one ``<type>_merged.db`` per type and deleted,
  so the number of files stays bounded however often workers are recycled:
  at most (metric file types) x (live workers + 1), plus one lock file.
- **a directory lock** (``obskit.lock``, ``flock``): compaction holds it exclusively
  while it folds a dead worker's files into the merged ones and deletes them, a scrape
  holds it shared while it reads the files. Without it a scrape that read the merged
  file after the fold and the dead worker's file before its deletion counted that
  worker twice (a counter that then "decreased": a reset to Prometheus), one that read
  them the other way round missed it, and one that globbed a file compaction then
  deleted failed.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import json
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _upstream
from prometheus_client import utils as _utils
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats

# Untyped upstream helpers, as Any for mypy --strict.
MultiProcessCollector: Any = _upstream.MultiProcessCollector
mark_process_dead: Any = _upstream.mark_process_dead
floatToGoString: Any = _utils.floatToGoString

ENV = "PROMETHEUS_MULTIPROC_DIR"
EXEMPLAR_SUFFIX = ".obskit"
_RECORD = 512
#: The longest record key (JSON of sample name + labels): all the room a record has.
#: (It was 160 in 256-byte records, which dropped every exemplar of
#: ``http_server_request_duration_seconds``: its name and four labels alone take about
#: 170 bytes before the route template.)
_KEY_MAX = _RECORD - 2 - 32 - 16 - 8 - 8
# key length (H), key, trace id, span id, value (d), timestamp (d)
_LAYOUT = struct.Struct(f"<H{_KEY_MAX}s32s16sdd")
#: The part of a record after its key: rewritten alone once the key is in place.
_TAIL = struct.Struct("<32s16sdd")
_TAIL_OFFSET = _LAYOUT.size - _TAIL.size
_HEADER = struct.Struct("<I")
_INITIAL_RECORDS = 255


def directory() -> str | None:
    """The multiprocess directory, if multiprocess mode is on (set before the import)."""
    return os.environ.get(ENV) or None


class ExemplarStore:
    """This worker's exemplar file: the latest exemplar per histogram bucket series."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._slots: dict[bytes, int] = {}
        self._file = open(path, "a+b")  # noqa: SIM115 - lives as long as the worker
        size = _HEADER.size + _RECORD * _INITIAL_RECORDS
        if os.fstat(self._file.fileno()).st_size < size:
            self._file.truncate(size)
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._capacity = (len(self._map) - _HEADER.size) // _RECORD

    def renew_lock(self) -> None:
        """In a forked child: a new lock (another thread may have held this one)."""
        self._lock = threading.Lock()

    def record(self, histogram: Any, amount: float, exemplar: dict[str, str]) -> None:
        """Remember ``exemplar`` for the bucket of ``histogram`` (an obskit histogram child
        or a histogram without labels) that ``amount`` falls in."""
        bounds = histogram._obskit_bounds
        index = bisect.bisect_left(bounds, amount)  # the first bound >= amount
        if index >= len(bounds) or not amount <= bounds[index]:
            raise ValueError(f"no bucket for {amount!r}")  # NaN: reported, not recorded
        keys: list[bytes | None] | None = histogram._obskit_exemplar_keys
        if keys is None:
            # One record key per bucket of this child, built on its first exemplar.
            keys = histogram._obskit_exemplar_keys = [None] * len(bounds)
        key = keys[index]
        if key is None:
            key = keys[index] = _record_key(histogram, bounds[index])
        if len(key) > _KEY_MAX:
            _self_stats.add("obskit_dropped", signal="exemplars", reason="key_too_long")
            return
        trace_id = exemplar.get("trace_id", "").encode()[:32]
        span_id = exemplar.get("span_id", "").encode()[:16]
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:  # the key is already written: only the exemplar changes
                _TAIL.pack_into(
                    self._map,
                    _HEADER.size + slot * _RECORD + _TAIL_OFFSET,
                    trace_id,
                    span_id,
                    amount,
                    time.time(),
                )
                return
            slot = len(self._slots)
            if slot >= self._capacity:
                self._grow()
            offset = _HEADER.size + slot * _RECORD
            _LAYOUT.pack_into(
                self._map, offset, len(key), key, trace_id, span_id, amount, time.time()
            )
            self._slots[key] = slot
            # Publish the record only once it is written.
            _HEADER.pack_into(self._map, 0, len(self._slots))

    def _grow(self) -> None:
        self._map.close()
        self._file.truncate(_HEADER.size + _RECORD * self._capacity * 2)
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._capacity *= 2

    def close(self) -> None:
        self._map.close()
        self._file.close()


def _record_key(histogram: Any, bound: float) -> bytes:
    """The record key of one bucket series: JSON [sample name, sorted labels with le]."""
    from obskit._metrics.registry import label_values, metric_name

    labels = dict(zip(histogram._obskit_labelnames, label_values(histogram), strict=False))
    labels["le"] = floatToGoString(bound)
    return json.dumps([f"{metric_name(histogram)}_bucket", sorted(labels.items())]).encode()


def read_exemplars(path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar]:
    """All exemplars in one worker's file, keyed by (sample name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar] = {}
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return found
    if len(data) < _HEADER.size:
        return found
    (count,) = _HEADER.unpack_from(data, 0)
    for slot in range(count):
        offset = _HEADER.size + slot * _RECORD
        if offset + _LAYOUT.size > len(data):
            break
        length, key, trace_id, span_id, value, timestamp = _LAYOUT.unpack_from(data, offset)
        try:
            name, labels = json.loads(key[:length])
            ids = {"trace_id": trace_id.decode(), "span_id": span_id.decode()}
        except (ValueError, UnicodeDecodeError):
            continue  # a record being written right now: skip it this scrape
        found[(name, tuple((k, v) for k, v in labels))] = Exemplar(ids, value, timestamp)
    return found


#: The lock file of a multiprocess directory (neither ``*.db`` nor ``*.obskit``: no
#: collector reads it).
LOCK_NAME = "obskit.lock"
#: How long a scrape or a compaction waits for the lock before going on without it.
LOCK_WAIT = 2.0


@contextlib.contextmanager
def locked(path: str, exclusive: bool) -> Iterator[None]:
    """Hold the directory's lock: shared to read the metric files, exclusive to change
    which files hold a dead worker's values. Waits at most ``LOCK_WAIT`` seconds, then
    goes on unlocked (counted as ``obskit_internal_errors_total{component="multiprocess"}``
    and logged at most every 10 s):
    a stuck holder must not stop scrapes or the gunicorn master. Without ``fcntl`` (not
    POSIX) or a writable directory, there is no lock."""
    try:
        import fcntl

        handle = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    except (ImportError, OSError):
        yield
        return
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    _internal_errors.report(
                        "multiprocess", TimeoutError(f"{LOCK_NAME} held too long")
                    )
                    break
                time.sleep(0.001)
        yield
    finally:
        os.close(handle)  # releases the lock


class MergedCollector(Collector):
    """prometheus-client's multiprocess merge, plus every worker's newest exemplars."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._collector = MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Any]:
        with locked(self._path, exclusive=False):  # the merge reads every file now
            metrics: Iterable[Any] = self._collector.collect()
        newest: dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar] = {}
        for path in glob.glob(os.path.join(self._path, f"*{EXEMPLAR_SUFFIX}")):
            for key, exemplar in read_exemplars(path).items():
                current = newest.get(key)
                if current is None or float(exemplar.timestamp or 0) > float(
                    current.timestamp or 0
                ):
                    newest[key] = exemplar
        for metric in metrics:
            if metric.type == "histogram" and newest:
                metric.samples = [
                    sample._replace(
                        exemplar=newest.get(
                            (sample.name, tuple(sorted(sample.labels.items()))), sample.exemplar
                        )
                    )
                    for sample in metric.samples
                ]
            yield metric


def exposition_registry(path: str) -> CollectorRegistry:
    """A registry for scrapes in multiprocess mode: all workers merged, with exemplars
    (obskit's own counters included: ``_metrics`` mirrors them into the workers' files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(path))
    return registry


_MERGED_GAUGE_MODES = ("sum", "max", "min", "mostrecent")


def compact(path: str, pid: int) -> None:
    """Account for a dead worker: drop its live gauges and exemplars, fold the rest of its
    files into ``<type>_merged.db``, and delete them (under the directory lock)."""
    from prometheus_client import mmap_dict

    with locked(path, exclusive=True):
        mark_process_dead(pid, path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, f"exemplars_{pid}{EXEMPLAR_SUFFIX}"))
        for dead in glob.glob(os.path.join(path, f"*_{pid}.db")):
            prefix = os.path.basename(dead)[: -len(f"_{pid}.db")]
            mode = prefix.split("_", 1)[1] if prefix.startswith("gauge_") else ""
            if not prefix.startswith("gauge_") or mode in _MERGED_GAUGE_MODES:
                _fold(mmap_dict.MmapedDict, dead, os.path.join(path, f"{prefix}_merged.db"), mode)
            # else: per-pid ("all") gauges of a dead process are stale
            os.remove(dead)


def _fold(mmaped: Any, dead: str, merged_path: str, mode: str) -> None:
    """Add the values of the file ``dead`` into the file ``merged_path``: summed, or by
    the gauge ``mode`` (max, min, most recent)."""
    merged = mmaped(merged_path)
    try:
        existing = {key: (value, ts) for key, value, ts in merged.read_all_values()}
        for key, value, timestamp, _ in mmaped.read_all_values_from_file(dead):
            if key in existing:
                old, old_timestamp = existing[key]
                if mode == "max":
                    value = max(old, value)
                elif mode == "min":
                    value = min(old, value)
                elif mode == "mostrecent":
                    if old_timestamp > timestamp:
                        value, timestamp = old, old_timestamp
                else:
                    value += old
            merged.write_value(key, value, timestamp)
    finally:
        merged.close()
