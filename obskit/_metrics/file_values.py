"""Multiprocess metric values that degrade instead of killing the process.

prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) stores each value of
each process in an mmap file of the directory; its value class raises into the caller
when the directory is read-only or gone (``OSError`` from ``counter.inc()``, from the
first ``labels()``), and kills the process with ``SIGBUS`` when the directory fills up
(a write into a hole of a file it grew with ``truncate()``).

:class:`FileValue` is a drop-in value class for that mode (``install()`` makes
prometheus-client use it for every metric made afterwards): the same files, names and
format, written through :class:`~obskit._metrics.metric_files.MappedFile`, whose space is
reserved before it is written. When a value cannot be written:

- the update is kept in the process (``get()`` is right, and the value is written as
  soon as the directory has room again: retried at most every :data:`RETRY_INTERVAL`);
- it is counted in ``obskit_dropped_total{signal="metrics", reason}`` (``dir_full``,
  ``dir_read_only``, ``dir_missing``, ``dir_error``);
- one warning line per reason is logged at most every :data:`LOG_INTERVAL` seconds.

Nothing raises into the caller. Each process's counter file starts with the
``obskit_dropped_total{signal, reason}`` series for these reasons already in it, so
counting a failure needs no room; when a process has no counter file at all, a scrape it
answers adds its own counts (see ``multiprocess``). A
deleted file (the directory removed or replaced under the running process) is noticed
within about :data:`RETRY_INTERVAL` and then treated as a missing directory.

File names are prometheus-client's (``counter_<pid>.db``, ``gauge_livesum_<pid>.db``);
if such a file already exists (written by prometheus-client's own class in this process,
or left by a dead process with the same pid), obskit writes ``counter_<pid>.<n>.db``
instead, which prometheus-client's collector reads the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from prometheus_client.mmap_dict import mmap_key

from obskit._lifecycle import after_fork
from obskit._lifecycle import self_stats as _self_stats
from obskit._metrics.metric_files import REASONS, MappedFile, reason_of

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two attempts to write to a directory that failed.
RETRY_INTERVAL = 1.0
#: Seconds between two log lines about the same reason.
LOG_INTERVAL = 60.0
#: Writes between two checks that a file still exists (each check reads the clock).
_CHECK_EVERY = 256
#: The signals whose drops the counter files hold from the start.
SIGNALS = ("metrics", "exemplars")

_log = logging.getLogger("obskit")
_lock = threading.Lock()
#: This process's file of each kind (``counter``, ``histogram``, ``gauge_livesum``, ...).
_files: dict[str, _ProcessFile] = {}
_values: weakref.WeakSet[FileValue] = weakref.WeakSet()
#: Set in a forked child: every value moves to the child's own files on its next use.
_stale = False
#: Drops whose count could not be written to this process's counter file, by (signal,
#: reason): a scrape answered by this process adds them (see ``multiprocess``).
_unshared: dict[tuple[str, str], float] = {}
#: The kinds of file with a problem: any successful write retries the others when due.
_broken: set[str] = set()
_last_logged: dict[str, float] = {}


class _Counting(threading.local):
    active = False
    lost = False


_counting = _Counting()


def reserved_keys() -> list[str]:
    """The keys of ``obskit_dropped_total{signal, reason}`` for the directory's reasons, as
    obskit's file-backed ``obskit_dropped`` counter writes them."""
    names = _self_stats.LABELS["obskit_dropped"]
    help_text = _self_stats.HELP["obskit_dropped"]
    keys = []
    for signal in SIGNALS:
        for reason in REASONS:
            labels = dict(zip(names, (signal, reason), strict=True))
            keys.append(
                mmap_key(
                    "obskit_dropped",
                    "obskit_dropped_total",
                    list(labels),
                    list(labels.values()),
                    help_text,
                )
            )
    return keys


class _ProcessFile:
    """One kind of this process's files: written while it can be, else failing softly."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.mapped: MappedFile | None = None
        #: Why the last write failed (None while every value is written).
        self.problem: str | None = None
        self.retry_at = 0.0
        self.writes = 0
        self.check_at = 0.0
        self.open()

    def open(self) -> bool:
        """Create this process's file of this kind; False (and ``problem`` set) if impossible."""
        directory = os.environ.get(ENV)
        try:
            if not directory:
                raise FileNotFoundError(2, f"{ENV} is not set")
            self.mapped = _create(directory, self.prefix)
            if self.prefix == "counter":
                for key in reserved_keys():
                    self.mapped.write(key, 0.0, 0.0)
        except OSError as error:
            if self.mapped is not None:
                self.mapped.close()
                self.mapped = None
            self._failed(reason_of(error))
            return False
        self.check_at = time.monotonic() + RETRY_INTERVAL
        return True

    def _failed(self, reason: str) -> None:
        self.problem = reason
        self.retry_at = time.monotonic() + RETRY_INTERVAL
        _broken.add(self.prefix)

    def write(self, key: str, value: float, timestamp: float) -> str | None:
        """Write one value; return why it could not be written (None when it was)."""
        mapped = self.mapped
        if mapped is not None:
            self.writes += 1
            if not self.writes % _CHECK_EVERY and self._deleted(mapped):
                mapped = None
            elif self.problem is None:
                try:
                    mapped.write(key, value, timestamp)
                    return None
                except OSError as error:  # no room for a new key: kept in the process
                    self._failed(reason_of(error))
                    return self.problem
            elif key in mapped.positions:  # its room is reserved: written whatever the rest
                mapped.write(key, value, timestamp)
                if time.monotonic() >= self.retry_at:
                    self._recover()
                return None
        if time.monotonic() < self.retry_at:
            return self.problem
        return self._recover()

    def _deleted(self, mapped: MappedFile) -> bool:
        now = time.monotonic()
        if now < self.check_at:
            return False
        self.check_at = now + RETRY_INTERVAL
        if not mapped.unlinked():
            return False
        mapped.close()
        self.mapped = None
        self._failed("dir_missing")
        return True

    def _recover(self) -> str | None:
        """Try again: (re)create the file if needed, then write every value of this kind
        this process holds (each one's current value: nothing kept in the process is lost)."""
        if self.mapped is None and not self.open():
            return self.problem
        assert self.mapped is not None
        try:
            for held in list(_values):
                if held._prefix == self.prefix:
                    self.mapped.write(held._key, held._value, held._timestamp)
        except OSError as error:
            self._failed(reason_of(error))
            return self.problem
        self.problem = None
        _broken.discard(self.prefix)
        if self.prefix == "counter":  # obskit_dropped's own values are written now too
            _unshared.clear()
        return None

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None


def _create(directory: str, prefix: str) -> MappedFile:
    """This process's new file for ``prefix``: prometheus-client's name, or a numbered
    one if that name is taken."""
    pid = os.getpid()
    try:
        return MappedFile(os.path.join(directory, f"{prefix}_{pid}.db"))
    except FileExistsError:
        pass
    for number in range(1, 100):
        try:
            return MappedFile(os.path.join(directory, f"{prefix}_{pid}.{number}.db"))
        except FileExistsError:
            continue
    raise FileExistsError(17, f"no free name for {prefix}_{pid}")


def _file(prefix: str) -> _ProcessFile:
    """This process's file for ``prefix`` (the lock held)."""
    file = _files.get(prefix)
    if file is None:
        file = _files[prefix] = _ProcessFile(prefix)
    return file


def _retry_broken() -> None:
    """(The lock held.) Retry every kind of file with a problem whose retry time has come:
    a value updated only while the directory failed is written without waiting for its
    next update."""
    now = time.monotonic()
    for prefix in list(_broken):
        file = _files.get(prefix)
        if file is None or file.problem is None:
            _broken.discard(prefix)
        elif now >= file.retry_at:
            file._recover()


def _move_to_this_process() -> None:
    """In a forked child (the lock held): every value starts again at 0 in the child's
    own files, as prometheus-client's values do (the parent's files keep its counts)."""
    global _stale
    _stale = False
    for file in _files.values():
        file.close()
    _files.clear()
    _unshared.clear()
    _broken.clear()
    for held in list(_values):
        held._value = 0.0
        held._timestamp = 0.0
        _file(held._prefix).write(held._key, 0.0, 0.0)


@after_fork.in_child
def _forked() -> None:
    global _lock, _stale
    _lock = threading.Lock()
    _stale = True


class FileValue:
    """A prometheus-client value in multiprocess mode that never raises and never faults
    (see the module's documentation). Same constructor and methods as prometheus-client's
    ``MmapedValue``."""

    _multiprocess = True
    __slots__ = ("__weakref__", "_key", "_prefix", "_timestamp", "_value")

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **kwargs: Any,
    ) -> None:
        self._prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key: str = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        self._value = 0.0
        self._timestamp = 0.0
        with _lock:
            if _stale:
                _move_to_this_process()
            _values.add(self)
            # The series shows (at 0) from now on, as with prometheus-client; a failure
            # here is counted at the first update that fails too.
            _file(self._prefix).write(self._key, 0.0, 0.0)

    def inc(self, amount: float) -> None:
        with _lock:
            if _stale:
                _move_to_this_process()
            self._value += amount
            self._timestamp = 0.0
            problem = _file(self._prefix).write(self._key, self._value, 0.0)
            if _broken and problem is None:
                _retry_broken()
        if problem is not None:
            dropped(problem)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            if _stale:
                _move_to_this_process()
            self._value = value
            self._timestamp = timestamp or 0.0
            problem = _file(self._prefix).write(self._key, value, self._timestamp)
            if _broken and problem is None:
                _retry_broken()
        if problem is not None:
            dropped(problem)

    def set_exemplar(self, exemplar: Any) -> None:
        """No exemplars in the files (obskit keeps them in its own exemplar store)."""

    def get(self) -> float:
        with _lock:
            if _stale:
                _move_to_this_process()
            return self._value

    def get_exemplar(self) -> None:
        return None


def dropped(reason: str, signal: str = "metrics") -> None:
    """Count one update of ``signal`` (``metrics`` or ``exemplars``) that the directory
    did not take, and say so in the log at most every :data:`LOG_INTERVAL` seconds."""
    if _counting.active:  # the count itself did not reach the file: the outer call keeps it
        _counting.lost = True
        return
    _counting.active = True
    _counting.lost = False
    try:
        _self_stats.add("obskit_dropped", signal=signal, reason=reason)
        if _counting.lost:
            with _lock:
                key = (signal, reason)
                _unshared[key] = _unshared.get(key, 0.0) + 1
    finally:
        _counting.active = False
    now = time.monotonic()
    if now - _last_logged.get(reason, -LOG_INTERVAL) >= LOG_INTERVAL:
        _last_logged[reason] = now
        _log.warning(
            "obskit: the metrics directory %s does not take updates (%s): they are kept in "
            'this process and counted in obskit_dropped_total{signal="%s",reason="%s"} '
            "until it takes them again (logged at most every %.0f s)",
            os.environ.get(ENV),
            reason,
            signal,
            reason,
            LOG_INTERVAL,
        )


def unshared() -> dict[tuple[str, str], float]:
    """This process's drop counts that its counter file does not hold, by (signal, reason)."""
    with _lock:
        return dict(_unshared)


def problem() -> str | None:
    """Why some value of this process is not in its files right now (None if all are).

    Also notices a file deleted since the last write (the directory removed or replaced),
    and retries the files with a problem whose retry time has come."""
    with _lock:
        if _stale:
            _move_to_this_process()
        _retry_broken()
        for file in _files.values():
            mapped = file.mapped
            if mapped is not None and mapped.unlinked():
                file.close()
                file._failed("dir_missing")
            if file.problem is not None:
                return file.problem
    return None


def install() -> bool:
    """Make prometheus-client's multiprocess mode use :class:`FileValue` for every metric
    made from now on; False (nothing changed) when multiprocess mode is off."""
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return False
    values.ValueClass = FileValue
    after_fork.register()
    return True
