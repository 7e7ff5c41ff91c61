"""Crashes in real child processes: a segfault leaves faulthandler's stack on stderr;
unhandled exceptions in a thread, the main thread and an asyncio task become error lines
with the trace id of the span they escaped, and each process ends as it would have."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.servers import run_python


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_a_segfault_leaves_a_faulthandler_stack_on_stderr() -> None:
    """ctypes.string_at(0) after init(): the process dies of SIGSEGV and stderr holds
    faulthandler's report with the crashing function's frame."""
    result = run_python(
        """
        import ctypes
        import obskit

        obskit.init(service_name="crash", log_format="json", log_level="error")

        def read_null():
            return ctypes.string_at(0)

        read_null()
        """
    )
    assert result.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert "Thread 0x" in result.stderr  # (every thread: all_threads)
    assert " in read_null\n" in result.stderr


def test_an_exception_in_a_thread_becomes_an_error_line_with_its_trace_id() -> None:
    """A thread whose @traced function raises: one "unhandled exception in thread" error
    line with the function span's trace and span ids, its name and the exception; the
    default hook still prints the traceback on stderr and the program goes on."""
    result = run_python(
        """
        import json, threading
        import obskit
        from opentelemetry import trace

        obskit.init(service_name="crash", log_format="json", log_level="warning")

        @obskit.traced(name="charge.card")
        def charge():
            context = trace.get_current_span().get_span_context()
            print(json.dumps({"ids": [f"{context.trace_id:032x}", f"{context.span_id:016x}"]}))
            raise ValueError("card declined")

        thread = threading.Thread(target=charge, name="payments")
        thread.start()
        thread.join()
        print(json.dumps({"after": "still running"}))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stdout)
    (ids,) = [line["ids"] for line in lines if "ids" in line]
    (crash,) = [line for line in lines if line.get("logger") == "obskit.crash"]
    assert crash["event"] == "unhandled exception in thread"
    assert crash["level"] == "error"
    assert [crash["trace_id"], crash["span_id"]] == ids
    assert crash["span.name"] == "charge.card"
    assert crash["thread.name"] == "payments"
    assert crash["exception.type"] == "ValueError"
    assert crash["exception.message"] == "card declined"
    assert "in charge" in crash["exception.stacktrace"]
    assert lines[-1] == {"after": "still running"}
    assert "Exception in thread payments" in result.stderr


def test_a_request_that_kills_its_thread_is_named_by_its_method_and_route() -> None:
    """A Flask request (exceptions propagated: TESTING) that raises out of its thread:
    the crash line names the request's span as the span will be named, ``HTTP /purge``
    for a method outside the standard ones, with the request's trace id."""
    result = run_python(
        """
        import json, threading
        import obskit
        from flask import Flask
        from opentelemetry import trace

        obskit.init(service_name="crash", log_format="json", log_level="warning")
        app = Flask("crashy")
        app.testing = True

        @app.route("/purge", methods=["PURGE"])
        def purge():
            context = trace.get_current_span().get_span_context()
            print(json.dumps({"trace_id": f"{context.trace_id:032x}"}))
            raise RuntimeError("cache gone")

        obskit.instrument_flask(app)
        thread = threading.Thread(
            target=lambda: app.test_client().open("/purge", method="PURGE"), name="purger"
        )
        thread.start()
        thread.join()
        """
    )
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stdout)
    (trace_id,) = [line["trace_id"] for line in lines if "event" not in line]
    (crash,) = [line for line in lines if line.get("logger") == "obskit.crash"]
    assert crash["event"] == "unhandled exception in thread"
    assert crash["trace_id"] == trace_id
    assert crash["span.name"] == "HTTP /purge"
    assert crash["exception.message"] == "cache gone"


def test_an_unhandled_exception_in_the_main_thread_is_logged_and_the_exit_is_unchanged() -> None:
    """The main thread's exception escaping a request-like obskit.span() and a @traced
    call: an "unhandled exception" line with the @traced span's ids, then Python's own
    traceback on stderr and exit status 1, as without obskit."""
    result = run_python(
        """
        import json
        import obskit
        from opentelemetry import trace

        obskit.init(service_name="crash", log_format="json", log_level="warning")

        @obskit.traced(name="load.config")
        def load():
            context = trace.get_current_span().get_span_context()
            print(json.dumps({"ids": [f"{context.trace_id:032x}", f"{context.span_id:016x}"]}))
            raise KeyError("database_url")

        with obskit.span("startup"):
            load()
        """
    )
    assert result.returncode == 1
    lines = _lines(result.stdout)
    (ids,) = [line["ids"] for line in lines if "ids" in line]
    (crash,) = [line for line in lines if line.get("logger") == "obskit.crash"]
    assert crash["event"] == "unhandled exception"
    assert crash["thread.main"] is True
    assert [crash["trace_id"], crash["span_id"]] == ids
    assert crash["exception.type"] == "KeyError"
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.rstrip().endswith("KeyError: 'database_url'")


def test_a_tasks_unretrieved_exception_is_logged_with_its_trace_id() -> None:
    """An asyncio task whose @traced coroutine raised and was never awaited: the loop's
    exception handler writes an error line with the span's ids and the task's name, and
    asyncio's own handler still logs its line."""
    result = run_python(
        """
        import asyncio, gc, json
        import obskit
        from opentelemetry import trace

        obskit.init(service_name="crash", log_format="json", log_level="warning")

        @obskit.traced(name="sync.inventory")
        async def sync():
            context = trace.get_current_span().get_span_context()
            print(json.dumps({"ids": [f"{context.trace_id:032x}", f"{context.span_id:016x}"]}))
            raise RuntimeError("inventory service gone")

        async def main():
            task = asyncio.create_task(sync(), name="inventory-sync")
            await asyncio.sleep(0.1)
            del task
            gc.collect()
            await asyncio.sleep(0.1)

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stdout)
    (ids,) = [line["ids"] for line in lines if "ids" in line]
    (crash,) = [line for line in lines if line.get("logger") == "obskit.crash"]
    assert crash["event"] == "Task exception was never retrieved"
    assert [crash["trace_id"], crash["span_id"]] == ids
    assert crash["asyncio.task.name"] == "inventory-sync"
    assert crash["exception.type"] == "RuntimeError"
    (own,) = [line["event"] for line in lines if line.get("logger") == "asyncio"]
    assert own.startswith("Task exception was never retrieved\nfuture: <Task finished")
