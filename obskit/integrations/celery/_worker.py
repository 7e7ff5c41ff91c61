"""The worker's processes: logging, metrics across prefork children, flushing.

- **Logging.** When the worker starts (``worker_init``, in its main process, before it
  sets up logging and before the pool forks) and obskit writes the root logger's records
  (``log_stdlib``), obskit answers Celery's ``setup_logging`` signal: Celery then leaves
  the root logger, its task logger and ``sys.stdout`` alone, and every record (Celery's
  own, ``celery.utils.log.get_task_logger``'s, the app's) is one of obskit's JSON lines
  on stdout, with the running task's ``trace_id``/``span_id``. obskit's ``log_level``
  applies, not the worker's ``--loglevel``.
- **Metrics from prefork children.** Each child is a process of its own: its metrics
  reach the worker's ``/metrics`` through prometheus-client's multiprocess directory
  (``PROMETHEUS_MULTIPROC_DIR``, set in the environment the worker starts in, so that
  ``init()`` in the app module finds it). The main process serves the port
  (``metrics_port``) with every child's values merged, exemplars included; the children
  serve nothing. At ``worker_init`` the main process creates the directory and compacts
  the files of processes that are gone (an earlier run's); each new child does the same
  for the children before it (recycled by ``--max-tasks-per-child``, killed by a time
  limit), so the number of files stays bounded. A prefork worker without the directory
  gets one warning: its ``/metrics`` would show no task.
- **Flushing.** A prefork child ends with ``os._exit()`` (no ``atexit``): on Celery's
  ``worker_process_shutdown`` it shuts obskit down (spans and log lines flushed within
  ``shutdown_timeout``). A child told to stop by SIGTERM (a terminated task, a cold
  shutdown, a hard time limit) flushes its ended spans first (``flush_on_sigterm``),
  then ends as the signal's default action. The main process flushes on ``worker_shutdown``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import signal
import time
from types import FrameType
from typing import Any

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks as _library_hooks
from obskit._lifecycle import runtime as _runtime
from obskit.integrations.celery._conventions import COMPONENT, NAME

_log = logging.getLogger("obskit")
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A metric file of one process: prometheus-client's (``counter_<pid>.db``), obskit's
#: numbered ones (``counter_<pid>.<n>.db``) and exemplar files (``exemplars_<pid>.obskit``).
_PID_FILE = re.compile(r"_(\d+)(?:\.\d+)?\.db$|^exemplars_(\d+)\.obskit$")

_connected_logging = False
_warned = False


def _telemetry() -> Any:
    """obskit's handle while it and its Celery integration are on, else None."""
    return _runtime.current() if _library_hooks.enabled(NAME) else None


def worker_init(sender: Any = None, **_: Any) -> None:
    """``worker_init`` (the worker's main process, before logging and the pool): take
    over logging, prepare the metrics directory."""
    telemetry = _telemetry()
    if telemetry is None:
        return
    try:
        if telemetry.settings.log_stdlib:
            _take_over_logging()
        _prepare_metrics(sender, telemetry)
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def _take_over_logging() -> None:
    global _connected_logging
    if _connected_logging:
        return
    from celery import signals  # type: ignore[import-untyped]

    signals.setup_logging.connect(_logging_is_obskits, weak=False, dispatch_uid="obskit")
    _connected_logging = True


def _logging_is_obskits(**_: Any) -> None:
    """``setup_logging``: connected, so Celery configures no logging (obskit has)."""


def _prepare_metrics(worker: Any, telemetry: Any) -> None:
    from obskit._metrics.registry import store

    path = os.environ.get(ENV)
    if path and store().multiprocess is not None:
        os.makedirs(path, exist_ok=True)
        compact_gone(path)
        return
    if not telemetry.settings.metrics_port or "prefork" not in str(getattr(worker, "pool_cls", "")):
        return
    global _warned
    if not _warned:
        _warned = True
        _log.warning(
            "obskit: this Celery worker's pool processes keep their metrics to themselves: "
            "its /metrics (port %d) shows none of its tasks; set %s to a directory of its "
            "own in the environment the worker starts in%s",
            telemetry.settings.metrics_port,
            ENV,
            " (it was set after obskit.init() ran)" if path else "",
        )


def compact_gone(path: str) -> None:
    """Fold the metric files of every process that is gone into the merged ones,
    starting none after ``LOCK_WAIT`` seconds (never raises: a failure is counted and
    logged, the files are kept and read as they are)."""
    from obskit._metrics import multiprocess

    keep = {os.getpid(), os.getppid()}
    pids: set[int] = set()
    try:
        names = [os.path.basename(name) for name in glob.glob(os.path.join(path, "*"))]
    except OSError:
        return
    for name in names:
        found = _PID_FILE.search(name)
        if found is not None:
            pids.add(int(found.group(1) or found.group(2)))
    # A lock held elsewhere delays each compaction by up to LOCK_WAIT: past that, the
    # rest waits for the next child (their files are read as they are meanwhile), so a
    # new child reports for work in time (Celery waits 4 s for it).
    deadline = time.monotonic() + multiprocess.LOCK_WAIT
    for pid in sorted(pids - keep):
        if time.monotonic() >= deadline:
            break
        if not _alive(pid):
            multiprocess.compact(path, pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (another user's process: alive)
    return True


def worker_process_init(**_: Any) -> None:
    """``worker_process_init`` (a new prefork child): compact the files of the children
    before it, and flush on SIGTERM."""
    telemetry = _telemetry()
    if telemetry is None:
        return
    try:
        path = os.environ.get(ENV)
        if path:
            compact_gone(path)
        if telemetry.settings.flush_on_sigterm and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL,
            None,
        ):
            signal.signal(signal.SIGTERM, _flush_then_terminate)
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def _flush_then_terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a prefork child: flush the spans (on a helper thread, waiting at most
    ``shutdown_timeout``: the interrupted code may hold any lock), then terminate as the
    default action would (Celery's choice for its children)."""
    telemetry = _runtime.current()
    if telemetry is not None:
        with contextlib.suppress(Exception):  # leaving matters more than flushing
            telemetry.force_flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_process_shutdown(**_: Any) -> None:
    """``worker_process_shutdown`` (a prefork child about to ``os._exit()``): shut
    obskit down, flushing spans and log lines within ``shutdown_timeout``."""
    try:
        _runtime.shutdown()
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def worker_shutdown(**_: Any) -> None:
    """``worker_shutdown`` (the worker's main process, its pool stopped): flush."""
    telemetry = _runtime.current()
    if telemetry is None:
        return
    try:
        telemetry.force_flush()
    except Exception as error:
        _internal_errors.report(COMPONENT, error)
