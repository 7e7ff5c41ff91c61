"""Celery: traces across the broker, task metrics, log lines with the task's trace id.

Switched on by ``obskit.init()`` when Celery is imported (before ``init()`` or after);
``disabled_instrumentations=["celery"]`` leaves it off. Everything goes through Celery's
public signals, one wrapped ``Celery.send_task`` and Celery's documented
``Request.on_timeout`` handler:

- sending a task: a PRODUCER span ``send {task}``, its context in the message headers
  (:mod:`._publish`);
- running it: a CONSUMER span ``process {task}`` continuing that trace, current while
  the task runs; ``obskit_task_duration_seconds{task, outcome}`` (with exemplars) and
  ``obskit_tasks_total{task, outcome}``; failures, retries, revocations and time limits
  recorded (:mod:`._execute`);
- the worker's processes: logging through obskit, metrics of prefork children merged
  on the main process's ``/metrics``, spans flushed when a child ends (:mod:`._worker`).

The signal receivers are module functions connected once per process (strongly, with a
``dispatch_uid``); each checks that the instrumentation is on and passes otherwise.
"""

from __future__ import annotations

from types import ModuleType

from obskit.integrations.celery import _execute, _publish, _worker

__all__ = ["patch"]

_UID = "obskit.integrations.celery"


def patch(module: ModuleType) -> None:
    """Instrument Celery (``module`` is the ``celery`` package): connect the signal
    receivers and wrap ``Celery.send_task``. Called by obskit once per process."""
    import wrapt
    from celery import exceptions, signals  # type: ignore[import-untyped]

    # (Celery's own module, not ``module``: that may still be the package's lazy first half.)
    from celery.app import base  # type: ignore[import-untyped]

    _execute.know_time_limits(exceptions.SoftTimeLimitExceeded, exceptions.TimeLimitExceeded)
    receivers = (
        (signals.before_task_publish, _publish.before_publish),
        (signals.task_prerun, _execute.prerun),
        (signals.task_failure, _execute.failure),
        (signals.task_retry, _execute.retry),
        (signals.task_postrun, _execute.postrun),
        (signals.task_revoked, _execute.revoked),
        (signals.worker_init, _worker.worker_init),
        (signals.worker_process_init, _worker.worker_process_init),
        (signals.worker_process_shutdown, _worker.worker_process_shutdown),
        (signals.worker_shutdown, _worker.worker_shutdown),
    )
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False, dispatch_uid=f"{_UID}.{receiver.__name__}")
    wrapt.wrap_function_wrapper(base, "Celery.send_task", _publish.send_task)
    signals.worker_init.connect(_wrap_on_timeout, weak=False, dispatch_uid=f"{_UID}.timeouts")


_timeouts_wrapped = False


def _wrap_on_timeout(**_: object) -> None:
    """In a worker's main process: record the tasks a hard time limit stops."""
    global _timeouts_wrapped
    if _timeouts_wrapped:
        return
    _timeouts_wrapped = True
    try:
        import wrapt
        from celery.worker import request  # type: ignore[import-untyped]

        wrapt.wrap_function_wrapper(request, "Request.on_timeout", _execute.on_timeout)
    except Exception as error:  # hard time limits then go unrecorded; the worker runs on
        from obskit._lifecycle import internal_errors

        internal_errors.report("celery", error)
