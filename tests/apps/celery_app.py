"""A Celery app whose module calls ``obskit.init()``, as apps do: the tasks of the Celery
tests, run by a real worker (``celery -A tests.apps.celery_app worker``) and sent from
the tests' producer scripts. The broker (and result backend) is ``$BROKER``; the service
name ``$SERVICE`` (default ``celery-worker``)."""

from __future__ import annotations

import logging
import os
import time

import structlog
from celery import Celery
from celery.utils.log import get_task_logger

import obskit

obskit.init(service_name=os.environ.get("SERVICE", "celery-worker"))

app = Celery("celery_app", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,  # a task waits in the broker, not behind a busy child
    task_track_started=True,
)

log = obskit.get_logger("tests.celery.obskit")
stdlib = logging.getLogger("tests.celery.stdlib")
task_log = get_task_logger(__name__)


@app.task
def add(x: int, y: int) -> int:
    """The task a request enqueues: a span of its own and a line from each logger."""
    with obskit.span("add.compute", x=x):
        log.info("obskit line", x=x)
        structlog.get_logger("tests.celery.structlog").info("structlog line", x=x)
        stdlib.info("stdlib line %s", x)
        task_log.info("task logger line %s", x)
        return x + y


@app.task
def pid(delay: float = 0.0) -> int:
    """The process the task ran in."""
    time.sleep(delay)
    return os.getpid()


@app.task
def broken() -> None:
    """Always fails."""
    raise ValueError("broken on purpose")


@app.task(bind=True, max_retries=2)
def flaky(self: object) -> str:
    """Fails its first run and asks to run again; succeeds the second time."""
    if self.request.retries == 0:  # type: ignore[attr-defined]
        raise self.retry(exc=ConnectionError("try again"), countdown=0)  # type: ignore[attr-defined]
    return "second time"


@app.task(soft_time_limit=0.5)
def soft_limited(seconds: float) -> None:
    """Stopped by its soft time limit (an exception in the task)."""
    time.sleep(seconds)


@app.task(time_limit=1)
def hard_limited(seconds: float) -> None:
    """Stopped by its hard time limit (its process is killed)."""
    time.sleep(seconds)
