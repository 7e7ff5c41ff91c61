"""Dumps in one process: the dump signal, the stuck-span watchdog, asyncio tasks, the
loopback-only endpoint on the metrics port, the heap summary, and the hooks put back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

import obskit
from obskit._dumps import active_spans, dump_signal, endpoint
from tests.conftest import openmetrics
from tests.prometheus_server import free_port
from tests.servers import ROOT, clean_env


class Lines:
    """The JSON lines written to stdout so far (read from capsys as they come)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.seen: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        for line in self._capsys.readouterr().out.splitlines():
            if line.startswith("{"):
                self.seen.append(json.loads(line))
        return self.seen

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], seconds: float = 10) -> None:
        """Read until ``found(lines)`` (at most ``seconds``)."""
        deadline = time.monotonic() + seconds
        while not found(self.read()):
            assert time.monotonic() < deadline, f"not found in {self.seen}"
            time.sleep(0.02)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.seen if line.get("event") == event]


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Lines:
    return Lines(capsys)


def _ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _busy_thread(name: str, seconds: float, ready: threading.Event, ids: list[Any]) -> Any:
    """A thread running a @traced function that sleeps ``seconds`` (its span's ids in
    ``ids`` once it runs)."""

    @obskit.traced(name="busy.work")
    def work() -> None:
        from opentelemetry import trace

        ids.append(_ids(trace.get_current_span()))
        ready.set()
        time.sleep(seconds)

    thread = threading.Thread(target=work, name=name)
    thread.start()
    return thread


def test_the_dump_signal_writes_one_line_per_thread_with_its_span_and_stack(
    lines: Lines,
) -> None:
    """SIGUSR1 writes one dump: a line per thread (the busy one with its span's trace id,
    span id, name and running time, and the sleeping function on its stack), then a last
    line counting the threads."""
    obskit.init(service_name="dumps", log_format="json")
    ready, ids = threading.Event(), []
    thread = _busy_thread("busy-1", 1.5, ready, ids)
    try:
        assert ready.wait(5)
        os.kill(os.getpid(), signal.SIGUSR1)
        lines.wait_for(lambda seen: any(x["event"] == "dump written" for x in seen))
    finally:
        thread.join()
    (summary,) = lines.events("dump written")
    stacks = [x for x in lines.events("thread stack") if x["dump.id"] == summary["dump.id"]]
    assert len(stacks) == summary["threads"]
    assert len({x["thread.id"] for x in stacks}) == len(stacks)
    (busy,) = [x for x in stacks if x["thread.name"] == "busy-1"]
    assert (busy["trace_id"], busy["span_id"]) == ids[0]
    assert busy["span.name"] == "busy.work"
    assert busy["running_ms"] >= 0
    assert busy["dump.reason"] == "signal"
    assert busy["logger"] == "obskit.dumps"
    assert ", in work\n    time.sleep(seconds)\n" in busy["stack"]
    assert next(x for x in stacks if x.get("thread.main"))["thread.name"] == "MainThread"


def test_the_handler_that_was_there_still_runs_and_shutdown_puts_it_back(lines: Lines) -> None:
    """The dump signal is chained: the application's own SIGUSR1 handler still runs (once
    per signal, as before), and shutdown() puts it back as the installed handler."""
    calls: list[int] = []

    def own(signum: int, frame: Any) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGUSR1, own)
    try:
        obskit.init(service_name="dumps", log_format="json")
        assert signal.getsignal(signal.SIGUSR1) is not own
        os.kill(os.getpid(), signal.SIGUSR1)
        lines.wait_for(lambda seen: any(x["event"] == "dump written" for x in seen))
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [signal.SIGUSR1]
        obskit.shutdown()
        assert signal.getsignal(signal.SIGUSR1) is own
        assert len(lines.events("dump written")) == 1
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_watchdog_dumps_each_stuck_span_once_and_counts_it(lines: Lines) -> None:
    """A @traced call inside an obskit.span() block, both running past stuck_after: one
    "stuck span" line each (ids, name, stack), never repeated while they keep running,
    and obskit_stuck_spans_total counts two."""
    obskit.init(service_name="dumps", log_format="json", stuck_after=0.3)
    done = threading.Event()
    ids: dict[str, tuple[str, str]] = {}

    @obskit.traced(name="inner.wait")
    def inner() -> None:
        from opentelemetry import trace

        ids["inner"] = _ids(trace.get_current_span())
        done.wait(10)

    def job() -> None:
        with obskit.span("outer.job") as span:
            ids["outer"] = _ids(span)
            inner()

    thread = threading.Thread(target=job, name="stuck-1")
    thread.start()
    try:
        lines.wait_for(lambda seen: len([x for x in seen if x["event"] == "stuck span"]) >= 2)
        time.sleep(0.5)  # several more checks while both still run
    finally:
        done.set()
        thread.join()
    lines.read()
    stuck = lines.events("stuck span")
    assert sorted((x["span.name"], x["trace_id"], x["span_id"]) for x in stuck) == [
        ("inner.wait", *ids["inner"]),
        ("outer.job", *ids["outer"]),
    ]
    for line in stuck:
        assert line["level"] == "warning"
        assert line["dump.reason"] == "stuck"
        assert line["thread.name"] == "stuck-1"
        assert line["running_ms"] >= 300
        assert "in inner\n    done.wait(10)\n" in line["stack"]
    assert openmetrics()["obskit_stuck_spans"].samples[0].value == 2.0


def test_a_span_that_ends_in_time_is_never_reported(lines: Lines) -> None:
    """Spans shorter than stuck_after leave nothing behind: no line, a count of zero,
    and the registry of running spans empty again."""
    obskit.init(service_name="dumps", log_format="json", stuck_after=0.5)

    @obskit.traced
    def quick() -> int:
        return 1

    for _ in range(100):
        quick()
    with obskit.span("block"):
        pass
    time.sleep(0.2)
    assert active_spans.snapshot() == []
    lines.read()
    assert lines.events("stuck span") == []
    assert openmetrics()["obskit_stuck_spans"].samples[0].value == 0.0


def test_a_dump_shows_every_asyncio_task_with_its_span(lines: Lines) -> None:
    """Each asyncio task of a running loop gets a line: a suspended one with its span's
    ids and name and its coroutines' frames down to the await it waits in."""
    obskit.init(service_name="dumps", log_format="json")
    seen_ids: list[tuple[str, str]] = []

    @obskit.traced(name="fetch.remote")
    async def fetch() -> None:
        from opentelemetry import trace

        seen_ids.append(_ids(trace.get_current_span()))
        await asyncio.sleep(5)

    async def main() -> None:
        task = asyncio.create_task(fetch(), name="fetcher")
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(200):
            await asyncio.sleep(0.02)
            if any(x["event"] == "dump written" for x in lines.read()):
                break
        task.cancel()

    asyncio.run(main())
    (summary,) = lines.events("dump written")
    tasks = [x for x in lines.events("task stack") if x["dump.id"] == summary["dump.id"]]
    assert len(tasks) == summary["tasks"] == 2
    (fetcher,) = [x for x in tasks if x["asyncio.task.name"] == "fetcher"]
    assert (fetcher["trace_id"], fetcher["span_id"]) == seen_ids[0]
    assert fetcher["span.name"] == "fetch.remote"
    assert fetcher["asyncio.task.state"] == "pending"
    assert "in fetch\n    await asyncio.sleep(5)\n" in fetcher["stack"]
    assert fetcher["stack"].rstrip().endswith("return await future")


def test_the_dump_endpoint_answers_loopback_clients_and_refuses_others(lines: Lines) -> None:
    """GET /debug/dump on the metrics port from 127.0.0.1 writes a dump and answers its
    summary; a client from any other address gets 403 and no dump: shown through the
    endpoint's WSGI app with a non-loopback REMOTE_ADDR, and over a real socket to this
    host's own non-loopback address when it has one."""
    port = free_port()
    obskit.init(
        service_name="dumps", log_format="json", metrics_port=port, metrics_addr="127.0.0.1"
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{endpoint.PATH}", timeout=10) as reply:
        assert reply.status == 200
        answer = json.loads(reply.read())
    lines.wait_for(lambda seen: any(x["event"] == "dump written" for x in seen))
    (summary,) = lines.events("dump written")
    assert summary["dump.reason"] == "endpoint"
    assert answer["dump.id"] == summary["dump.id"]
    assert answer["threads"] == len(lines.events("thread stack")) >= 2

    def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"metrics"]

    app = endpoint.with_dump_path(metrics_app)
    for remote in ("10.1.2.3", "192.168.0.7", "::ffff:10.0.0.1", "2001:db8::1", ""):
        status, body = _get(app, endpoint.PATH, remote)
        assert status == "403 Forbidden", remote
        assert b"loopback" in body
    for remote in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert endpoint.is_loopback(remote)
    assert _get(app, "/metrics", "10.1.2.3") == ("200 OK", b"metrics")
    own = _non_loopback_address()
    if own is not None:  # this host's own address: a real client that is not loopback
        obskit.init(service_name="dumps", log_format="json", metrics_port=port, metrics_addr=own)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{own}:{port}{endpoint.PATH}", timeout=10)
        assert refused.value.code == 403
        refused.value.close()
    lines.read()
    assert len(lines.events("dump written")) == 1


def _get(app: Callable[..., Any], path: str, remote: str) -> tuple[str, bytes]:
    """GET ``path`` from the WSGI ``app`` as a client at ``remote`` (REMOTE_ADDR)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": remote}
    reply: list[str] = []
    body = app(environ, lambda status, headers: reply.append(status))
    return reply[0], b"".join(body)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host that is not loopback (None if it has none)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # (UDP: nothing is sent)
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if endpoint.is_loopback(address) or address == "0.0.0.0" else address


def test_an_endpoint_dump_asked_for_again_within_a_second_is_refused(lines: Lines) -> None:
    """Two requests to /debug/dump within a second: the second is answered 429."""
    obskit.init(service_name="dumps", log_format="json")

    def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    app = endpoint.with_dump_path(metrics_app)
    time.sleep(endpoint.MIN_SECONDS)
    assert _get(app, endpoint.PATH, "127.0.0.1")[0] == "200 OK"
    assert _get(app, endpoint.PATH, "127.0.0.1")[0] == "429 Too Many Requests"


def test_a_heap_summary_lists_object_types_and_allocation_growth(lines: Lines) -> None:
    """With dump_heap and dump_tracemalloc, a dump adds the heap's top types (count and
    bytes) and tracemalloc's top sites; the second dump shows what grew since the first
    (a list of big strings made in between) at the line that made it."""
    obskit.init(service_name="dumps", log_format="json", dump_heap=True, dump_tracemalloc=1)
    from obskit._dumps import dump_lines

    dump_lines.write_dump("endpoint", heap=True)
    hoard = [str(n) * 1000 for n in range(2000)]  # the growth
    dump_lines.write_dump("endpoint", heap=True)
    lines.read()
    summary = lines.events("heap summary")[-1]
    assert summary["heap.objects"] > 1000
    types = {row["type"]: row for row in summary["heap.types"]}
    assert types["builtins.dict"]["count"] > 0
    assert all(row["bytes"] > 0 for row in summary["heap.types"])
    first, second = lines.events("heap allocations")
    assert "tracemalloc.growth" not in first
    grown = second["tracemalloc.growth"][0]
    assert grown["site"].endswith(f"{os.path.basename(__file__)}:{_line_of('the growth')}")
    assert grown["bytes"] > 2000 * 1000
    assert len(hoard) == 2000
    obskit.shutdown()
    import tracemalloc

    assert not tracemalloc.is_tracing()


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, 1):
            if f"# {marker}" in text:
                return number
    raise AssertionError(marker)


def test_dumps_off_leaves_signals_hooks_and_threads_as_they_were() -> None:
    """dumps=False and crash_logs=False: no thread, SIGUSR1 and every exception hook as
    before init(), and no span entered in the registry."""
    threads = set(threading.enumerate())
    hooks = (sys.excepthook, threading.excepthook, signal.getsignal(signal.SIGUSR1))
    obskit.init(service_name="dumps", log_format="json", dumps=False, crash_logs=False)

    @obskit.traced
    def work() -> list[Any]:
        return active_spans.snapshot()

    assert work() == []
    assert (sys.excepthook, threading.excepthook, signal.getsignal(signal.SIGUSR1)) == hooks
    assert not [t for t in set(threading.enumerate()) - threads if t.name == "obskit-dumps"]


def test_shutdown_removes_every_hook_and_the_dump_thread() -> None:
    """After shutdown() the exception hooks and SIGUSR1 are what they were before init(),
    and the dump thread has ended."""
    hooks = (sys.excepthook, threading.excepthook, signal.getsignal(signal.SIGUSR1))
    obskit.init(service_name="dumps", log_format="json", stuck_after=1)
    assert dump_signal.installed()
    assert sys.excepthook is not hooks[0]
    assert threading.excepthook is not hooks[1]
    (dumper,) = [t for t in threading.enumerate() if t.name == "obskit-dumps"]
    obskit.shutdown()
    assert (sys.excepthook, threading.excepthook, signal.getsignal(signal.SIGUSR1)) == hooks
    dumper.join(5)
    assert not dumper.is_alive()
    assert not active_spans.enabled()


def test_a_main_thread_blocked_in_a_restarted_system_call_still_dumps_at_once() -> None:
    """A child whose main thread blocks in a read that SIGUSR1 does not interrupt
    (siginterrupt False, as gunicorn sets it): the dump arrives while it is still
    blocked, showing it in the read; once the read returns, the Python handler's late
    turn adds no second dump."""
    code = textwrap.dedent(
        """
        import signal, sys
        import obskit

        obskit.init(service_name="blocked", log_format="json")
        signal.siginterrupt(signal.SIGUSR1, False)

        def wait_for_input():
            print('{"ready": true}', flush=True)
            return sys.stdin.buffer.read(1)

        wait_for_input()
        print('{"done": true}', flush=True)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=clean_env(PYTHONUNBUFFERED="1"),
        cwd=ROOT,
    )
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_json_lines, args=(child, received), daemon=True)
    reader.start()
    seen: list[dict[str, Any]] = []

    def next_line() -> dict[str, Any]:
        seen.append(received.get(timeout=20))
        return seen[-1]

    try:
        while "ready" not in next_line():
            pass
        _wait_until_sleeping(child.pid)  # (in the read)
        child.send_signal(signal.SIGUSR1)
        while next_line().get("event") != "dump written":
            pass
        assert child.poll() is None  # still blocked in the read
        assert child.stdin is not None
        child.stdin.close()
        while "done" not in next_line():
            pass
        assert child.wait(timeout=20) == 0
    finally:
        _end(child, reader)
    while not received.empty():
        seen.append(received.get())
    (main,) = [x for x in seen if x.get("thread.main")]
    frames = [line for line in main["stack"].splitlines() if line.startswith("  File ")]
    assert frames[-1].endswith(", in wait_for_input")  # (3.13 shows -c source lines too)
    assert len([x for x in seen if x.get("event") == "dump written"]) == 1


def test_a_traced_process_blocked_in_a_system_call_dumps_on_every_signal() -> None:
    """Under a trace function (coverage, a debugger) in every thread, sixteen signals to a
    main thread blocked in a read give sixteen dumps while it is still blocked: the dump
    thread does not spin on the signal the main thread cannot take yet (Python 3.11)."""
    code = textwrap.dedent(
        """
        import signal, sys, threading

        def trace(frame, event, arg):
            return trace

        threading.settrace(trace)
        sys.settrace(trace)
        import obskit

        obskit.init(service_name="traced", log_format="json")
        signal.siginterrupt(signal.SIGUSR1, False)
        print('{"ready": true}', flush=True)
        sys.stdin.buffer.read(1)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=clean_env(coverage=False, PYTHONUNBUFFERED="1"),
        cwd=ROOT,
    )
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_json_lines, args=(child, received), daemon=True)
    reader.start()
    try:
        while "ready" not in received.get(timeout=20):
            pass
        for _ in range(16):
            _wait_until_sleeping(child.pid)
            child.send_signal(signal.SIGUSR1)
            while received.get(timeout=20).get("event") != "dump written":
                pass
        assert child.poll() is None  # still blocked in the read
    finally:
        _end(child, reader)


def _read_json_lines(child: subprocess.Popen[bytes], into: queue.Queue[dict[str, Any]]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(b"{"):
            into.put(json.loads(line))


def _end(child: subprocess.Popen[bytes], reader: threading.Thread) -> None:
    """Close the child's stdin (its read returns), then make sure it has ended."""
    assert child.stdin is not None
    assert child.stdout is not None
    with contextlib.suppress(OSError):
        child.stdin.close()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    reader.join(10)
    child.stdout.close()


def _wait_until_sleeping(pid: int) -> None:
    """Wait (bounded) until the main thread of ``pid`` sleeps in a system call."""
    stat = f"/proc/{pid}/task/{pid}/stat"
    deadline = time.monotonic() + 10
    sleeping = 0
    while sleeping < 3:
        assert time.monotonic() < deadline
        with open(stat, encoding="ascii") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
        sleeping = sleeping + 1 if state == "S" else 0
        time.sleep(0.02)


def test_the_dumps_page_snippet_runs() -> None:
    """docs/dumps.md's Python snippet runs as written and sets what it says."""
    page = (ROOT / "docs" / "dumps.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", page, re.S)
    exec(compile(block, "dumps.md-snippet", "exec"), {"__name__": "__snippet__"})
    telemetry = obskit._lifecycle.runtime.current()
    assert telemetry is not None
    assert (telemetry.settings.stuck_after, telemetry.settings.dump_signal) == (10.0, "sigusr1")
