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

Nothing here can kill a process through a full, read-only or vanished directory: the
gunicorn master's compaction reads files with ``read()`` and writes the folded file with
ordinary writes (``ENOSPC`` is an error: the dead worker's files are kept, so its counts
still show, and the fold is retried at the next compaction); a worker's exemplar file
reserves its space before it maps it (:func:`~obskit._metrics.metric_files.reserve`); and
the values themselves are :mod:`obskit._metrics.file_values`. A scrape reports the
directory's state in ``obskit_multiprocess_ok`` (1, or 0 when the directory is missing,
read-only, full, or holds not every value of the scraping process).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import glob
import json
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _upstream
from prometheus_client import utils as _utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample

from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._metrics import file_values as _file_values
from obskit._metrics import metric_files as _files

try:
    import fcntl
except ImportError:  # not POSIX: no directory lock
    fcntl = None  # type: ignore[assignment]

# Untyped upstream helpers, as Any for mypy --strict.
MultiProcessCollector: Any = _upstream.MultiProcessCollector
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
        """Create (or reuse) the file at ``path``, its first records' space reserved.

        Raises:
            OSError: the directory is full, read-only or gone.
        """
        self.path = path
        self._lock = threading.Lock()
        self._slots: dict[bytes, int] = {}
        self._handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = max(_HEADER.size + _RECORD * _INITIAL_RECORDS, os.fstat(self._handle).st_size)
            # Every byte mapped is reserved first: a full directory is an OSError now,
            # never a SIGBUS at a later write through the map.
            _files.reserve(self._handle, size)
            self._map = mmap.mmap(self._handle, size)
        except BaseException:
            os.close(self._handle)
            raise
        _HEADER.pack_into(self._map, 0, 0)  # (a reused pid's old records: not ours)
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
        size = _HEADER.size + _RECORD * self._capacity * 2
        _files.reserve(self._handle, size)  # raises (ENOSPC) before the map grows
        grown = mmap.mmap(self._handle, size)
        self._map.close()
        self._map = grown
        self._capacity *= 2

    def close(self) -> None:
        self._map.close()
        os.close(self._handle)


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
        if fcntl is None:
            raise OSError("no fcntl")
        handle = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    except OSError:
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
                    error = TimeoutError(f"{LOCK_NAME} held too long")
                    if exclusive:  # compaction, in the gunicorn master: never raises
                        _report(error)
                    else:
                        _internal_errors.report("multiprocess", error)
                    break
                time.sleep(0.001)
        yield
    finally:
        # Unlocked explicitly, not by closing: a child forked meanwhile (a Celery pool
        # child started during a scrape of the worker's /metrics) has a copy of this
        # descriptor, and flock holds while any copy is open; an unlock applies to all.
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def _report(error: BaseException) -> None:
    """:func:`obskit._lifecycle.internal_errors.report` (counted in
    ``obskit_internal_errors_total{component="multiprocess"}``, logged at most every
    10 s) that never raises, not even in strict mode: the gunicorn master keeps going."""
    with contextlib.suppress(Exception):
        _internal_errors.report("multiprocess", error)


class MergedCollector(Collector):
    """prometheus-client's multiprocess merge, plus every worker's newest exemplars, the
    directory's state (``obskit_multiprocess_ok``) and this process's drop counts that
    the directory could not take."""

    def __init__(self, path: str, recent_problem: Callable[[], str | None] | None = None) -> None:
        self._path = path
        #: In a process of its own (the pod's metrics server): why some worker failed to
        #: write lately, which this process's own files cannot tell.
        self._recent_problem = recent_problem

    def collect(self) -> Iterable[Any]:
        metrics = self._merge()
        newest: dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar] = {}
        for path in glob.glob(os.path.join(self._path, f"*{EXEMPLAR_SUFFIX}")):
            for key, exemplar in read_exemplars(path).items():
                current = newest.get(key)
                if current is None or float(exemplar.timestamp or 0) > float(
                    current.timestamp or 0
                ):
                    newest[key] = exemplar
        unshared = _file_values.unshared()
        dropped_seen = False
        for metric in metrics:
            if metric.type == "histogram":
                metric.samples = _series_together(metric.samples)
            if metric.type == "histogram" and newest:
                metric.samples = [
                    sample._replace(
                        exemplar=newest.get(
                            (sample.name, tuple(sorted(sample.labels.items()))), sample.exemplar
                        )
                    )
                    for sample in metric.samples
                ]
            elif metric.name == "obskit_dropped" and unshared:
                dropped_seen = True
                metric.samples = _add_unshared(metric.samples, unshared)
            yield metric
        if unshared and not dropped_seen:
            family = CounterMetricFamily(
                "obskit_dropped",
                _self_stats.HELP["obskit_dropped"],
                labels=list(_self_stats.LABELS["obskit_dropped"]),
            )
            for (signal, reason), amount in sorted(unshared.items()):
                family.add_metric([signal, reason], amount)
            yield family
        ok = GaugeMetricFamily(
            "obskit_multiprocess_ok",
            "1 if the multiprocess metrics directory takes every update, 0 if it is missing, "
            'read-only or full (see obskit_dropped_total{signal="metrics"}).',
        )
        recent = self._recent_problem() if self._recent_problem is not None else None
        ok.add_metric([], 0.0 if recent or directory_problem(self._path) else 1.0)
        yield ok

    def _merge(self) -> list[Any]:
        """prometheus-client's merge of every ``*.db`` file; a file it cannot read (one
        deleted or damaged under the scrape) is left out rather than failing the scrape."""
        with locked(self._path, exclusive=False):  # the merge reads every file now
            files = glob.glob(os.path.join(self._path, "*.db"))
            try:
                return list(MultiProcessCollector.merge(files, accumulate=True))
            except Exception as error:
                _internal_errors.report("multiprocess", error)
                readable = [path for path in files if _readable(path)]
                return list(MultiProcessCollector.merge(readable, accumulate=True))


def _series_together(samples: list[Any]) -> list[Any]:
    """A histogram's samples with each series' samples next to each other, in their order
    (OpenMetrics requires it; prometheus-client's merge before 0.24 gives every ``_sum``
    first)."""
    series: dict[tuple[tuple[str, str], ...], list[Any]] = {}
    for sample in samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        series.setdefault(key, []).append(sample)
    return [sample for group in series.values() for sample in group]


def _readable(path: str) -> bool:
    try:
        for _ in MultiProcessCollector.merge([path], accumulate=True):
            pass
    except Exception:
        return False
    return True


def _add_unshared(samples: list[Any], unshared: dict[tuple[str, str], float]) -> list[Any]:
    """``obskit_dropped_total`` samples with this process's unwritten counts added."""
    left = dict(unshared)
    changed = []
    for sample in samples:
        key = (sample.labels.get("signal", ""), sample.labels.get("reason", ""))
        if sample.name == "obskit_dropped_total" and key in left:
            sample = sample._replace(value=sample.value + left.pop(key))
        changed.append(sample)
    for (signal, reason), amount in sorted(left.items()):
        changed.append(Sample("obskit_dropped_total", {"signal": signal, "reason": reason}, amount))
    return changed


def directory_problem(path: str) -> str | None:
    """Why the directory does not take every update now (``dir_missing``,
    ``dir_read_only``, ``dir_full``, or this process's own files' reason), or None."""
    if not os.path.isdir(path):
        return "dir_missing"
    if not os.access(path, os.W_OK):
        return "dir_read_only"
    try:
        stats = os.statvfs(path)
    except OSError as error:
        return _files.reason_of(error)
    if stats.f_bavail * stats.f_frsize < _files.INITIAL_SIZE:
        return "dir_full"
    return _file_values.problem()


def exposition_registry(
    path: str, recent_problem: Callable[[], str | None] | None = None
) -> CollectorRegistry:
    """A registry for scrapes in multiprocess mode: all workers merged, with exemplars
    (obskit's own counters included: ``_metrics`` mirrors them into the workers' files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(path, recent_problem))
    return registry


def dropped_metric_updates(path: str) -> dict[str, float]:
    """Every process's ``obskit_dropped_total{signal="metrics"}`` in ``path``'s counter
    files, by reason (empty when they cannot be read)."""
    totals: dict[str, float] = {}
    try:
        with locked(path, exclusive=False):
            files = glob.glob(os.path.join(path, "counter_*.db"))
            merged = list(MultiProcessCollector.merge(files, accumulate=True))
    except Exception:
        return totals
    for metric in merged:
        if metric.name == "obskit_dropped":
            for sample in metric.samples:
                if (
                    sample.name == "obskit_dropped_total"
                    and sample.labels.get("signal") == "metrics"
                ):
                    reason = sample.labels.get("reason", "")
                    totals[reason] = totals.get(reason, 0.0) + sample.value
    return totals


_MERGED_GAUGE_MODES = ("sum", "max", "min", "mostrecent")
#: Compactions asked for while one runs. gunicorn 22 and 23 call ``child_exit`` from
#: their SIGCHLD handler, which can interrupt a ``child_exit`` already running (two
#: workers dying together): the interrupting call only queues its worker here, and the
#: running compaction does it next. Nothing blocks, so nothing can deadlock.
_queued: collections.deque[tuple[str, int]] = collections.deque()
_running = threading.Lock()


@after_fork.in_child
def _renew_compaction_lock() -> None:
    global _running
    _running = threading.Lock()
    _queued.clear()


def compact(path: str, pid: int) -> None:
    """Account for the dead process ``pid``: drop its live gauges and exemplars, fold the
    rest of its files into ``<type>_merged.db``, and delete them (under the directory lock).

    Never raises an ``Exception`` and never maps a file (it runs in the gunicorn master):
    a failure is counted in ``obskit_internal_errors_total{component="multiprocess"}``
    and logged, and the files it could not fold are kept (their counts still show) and
    folded at the next compaction. Safe to call from a signal handler that interrupted
    another call (see ``_queued``)."""
    _queued.append((path, pid))
    while _queued:
        if not _running.acquire(blocking=False):
            return  # the call this one interrupted does it
        try:
            while _queued:
                directory_path, dead = _queued.popleft()
                try:
                    _compact_one(directory_path, dead)
                except Exception as error:
                    _report(error)
        finally:
            _running.release()


def _pid_files(path: str, pid: int) -> list[tuple[str, str]]:
    """(file, prefix) of every metric file of ``pid``: prometheus-client's names and
    obskit's numbered ones (``counter_<pid>.<n>.db``)."""
    found = []
    for pattern in (f"*_{pid}.db", f"*_{pid}.*.db"):
        for dead in glob.glob(os.path.join(path, pattern)):
            name = os.path.basename(dead)
            found.append((dead, name[: name.rindex(f"_{pid}.")]))
    return found


def _compact_one(path: str, pid: int) -> None:
    with locked(path, exclusive=True):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, f"exemplars_{pid}{EXEMPLAR_SUFFIX}"))
        by_prefix: dict[str, list[str]] = {}
        for dead, prefix in _pid_files(path, pid):
            by_prefix.setdefault(prefix, []).append(dead)
        for prefix, dead_files in by_prefix.items():
            mode = prefix.split("_", 1)[1] if prefix.startswith("gauge_") else ""
            if not prefix.startswith("gauge_") or mode in _MERGED_GAUGE_MODES:
                try:
                    _fold(dead_files, os.path.join(path, f"{prefix}_merged.db"), mode)
                except OSError as error:
                    _report(error)
                    continue  # kept: still read by every scrape, folded next time
            # else: live and per-pid ("all") gauges of a dead process are stale
            for dead in dead_files:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(dead)


def _fold(dead_files: list[str], merged_path: str, mode: str) -> None:
    """Add the values of ``dead_files`` into the file ``merged_path``: summed, or by the
    gauge ``mode`` (max, min, most recent). Plain reads, then the whole merged file
    written anew with ordinary writes and renamed into place.

    Raises:
        OSError: a file could not be read or the merged file written (nothing changed).
    """
    merged: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(FileNotFoundError):
        merged = {key: (value, ts) for key, value, ts in _files.read_entries(merged_path)}
    for dead in dead_files:
        for key, value, timestamp in _files.read_entries(dead):
            if key in merged:
                old, old_timestamp = merged[key]
                if mode == "max":
                    value = max(old, value)
                elif mode == "min":
                    value = min(old, value)
                elif mode == "mostrecent":
                    if old_timestamp > timestamp:
                        value, timestamp = old, old_timestamp
                else:
                    value += old
            merged[key] = (value, timestamp)
    _files.write_file(
        merged_path, _files.encode((key, value, ts) for key, (value, ts) in merged.items())
    )
