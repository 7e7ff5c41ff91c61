"""Dumps: what every thread and asyncio task is doing right now, tied to its trace.

- ``active_spans.py``: the spans running now, per thread and per asyncio task (requests,
  ``@traced`` calls, ``obskit.span()`` blocks): what every dump reads, and what a sampling
  profiler can read to label its samples.
- ``stacks.py``: the stacks of threads and tasks, found and formatted (bounded).
- ``dump_lines.py``: the JSON lines of a dump (one per thread, one per task) and of one span.
- ``dump_signal.py``: the dump signal (``SIGUSR1`` by default), chained with the handler
  that was there, woken at C level so a main thread stuck in a system call still dumps.
- ``dump_thread.py``: the one thread that writes on-demand dumps and runs the watchdog.
- ``watchdog.py``: spans running longer than ``stuck_after``, dumped once each and counted.
- ``worker_timeout.py``: gunicorn's ``WORKER TIMEOUT``, reported from ``worker_abort``.
- ``crashes.py``: ``faulthandler`` and the unhandled-exception hooks.
- ``heap.py``: the heap summary (object types; tracemalloc's allocation sites).
- ``endpoint.py``: ``/debug/dump`` on the metrics port, for loopback clients.
- ``install.py``: all of the above switched on and off by ``init()``/``shutdown()``.
"""
