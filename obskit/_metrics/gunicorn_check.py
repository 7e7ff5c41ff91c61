"""Several gunicorn workers without a shared metrics directory: say so once, with the fix.

Each gunicorn worker is a process of its own. Without prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which obskit's gunicorn hooks set up)
every worker counts only the requests it served, and a scrape of ``/metrics`` reaches
one worker: the numbers look right and are a fraction of the truth. ``init()`` calls
:func:`warn_if_misconfigured`, which logs one warning naming the fix.

How it knows, without importing gunicorn: gunicorn's master sets ``SERVER_SOFTWARE``
to ``gunicorn/<version>`` in its environment, which its workers inherit. The number
of workers is gunicorn's own resolved configuration (``cfg.workers``: command line,
``GUNICORN_CMD_ARGS``, config file and ``WEB_CONCURRENCY`` already merged), read from
the arbiter, application or worker object on the call stack while gunicorn loads the
app — in the master with ``--preload``, else in each worker, where only the first
worker started warns. When ``init()`` runs elsewhere (a thread of the app's own), the
command line's ``-w``/``--workers`` and ``GUNICORN_CMD_ARGS`` are read instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

#: The variable that turns on prometheus-client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Frames walked up the stack at most, looking for gunicorn's configuration.
MAX_FRAMES = 200

WARNING = (
    "obskit: gunicorn runs {workers} workers but PROMETHEUS_MULTIPROC_DIR is not set, so"
    " each worker keeps its own metrics and a scrape of /metrics sees only one worker's"
    " share. Fix: put `from obskit.integrations.gunicorn import *` in gunicorn.conf.py"
    " and start gunicorn with it (`gunicorn -c gunicorn.conf.py ...`)"
)

_warned = False


def warn_if_misconfigured(log: logging.Logger, environ: Mapping[str, str] | None = None) -> None:
    """Log :data:`WARNING` once per process when gunicorn runs several workers without
    a multiprocess directory. Never raises."""
    global _warned
    try:
        environ = os.environ if environ is None else environ
        if _warned or not environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
            return
        if environ.get(MULTIPROC_ENV):
            return
        workers, age = gunicorn_workers(inspect.currentframe(), sys.argv, environ)
        if workers is None or workers < 2 or (age is not None and age != 1):
            return
        _warned = True
        log.warning(WARNING.format(workers=workers))
    except Exception:
        log.debug("obskit: the gunicorn check failed", exc_info=True)


def gunicorn_workers(
    frame: FrameType | None, argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[int | None, int | None]:
    """The configured number of workers, and this worker's age (1 for the first worker
    gunicorn started; ``None`` in the master or when unknown)."""
    workers: int | None = None
    age: int | None = None
    depth = 0
    while frame is not None and depth < MAX_FRAMES:
        if "gunicorn" in frame.f_code.co_filename:  # only gunicorn's own frames
            owner = frame.f_locals.get("self")
            config = getattr(owner, "cfg", None)
            count = getattr(config, "workers", None)
            if workers is None and isinstance(count, int):
                workers = count
            worker_age = getattr(owner, "age", None)
            if age is None and config is not None and isinstance(worker_age, int):
                age = worker_age
        frame = frame.f_back
        depth += 1
    if workers is None:
        workers = _from_command_line(argv, environ)
    return workers, age


def _from_command_line(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """``-w N``/``--workers N`` from the command line (it wins) or ``GUNICORN_CMD_ARGS``."""
    for words in (list(argv[1:]), shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))):
        found = _workers_option(words)
        if found is not None:
            return found
    return None


def _workers_option(words: list[str]) -> int | None:
    found: int | None = None
    for index, word in enumerate(words):
        text: str | None = None
        if word in ("-w", "--workers") and index + 1 < len(words):
            text = words[index + 1]
        elif word.startswith("--workers="):
            text = word.partition("=")[2]
        elif word.startswith("-w") and word[2:].isdigit():
            text = word[2:]
        if text is not None and text.strip().isdigit():
            found = int(text)  # the last one wins, as in argparse
    return found


def gunicorn_role(frame: FrameType | None) -> str | None:
    """``"master"`` when gunicorn's arbiter is loading the app (``--preload``),
    ``"worker"`` in a worker, ``None`` when no gunicorn frame is on the stack."""
    role: str | None = None
    depth = 0
    while frame is not None and depth < MAX_FRAMES:
        if "gunicorn" in frame.f_code.co_filename:
            owner = frame.f_locals.get("self")
            if isinstance(getattr(owner, "age", None), int) and hasattr(owner, "cfg"):
                return "worker"
            if hasattr(owner, "WORKERS") and hasattr(owner, "cfg"):
                role = "master"
        frame = frame.f_back
        depth += 1
    return role
