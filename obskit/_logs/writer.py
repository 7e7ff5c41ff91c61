"""The line writer: whole log lines to stdout/stderr, and a pipe that stalls never blocks.

:class:`LineWriter` is what every obskit logger, the stdlib bridge and gunicorn's own
loggers (``obskit.integrations.gunicorn_logging``) write to. For a regular file or a
terminal it writes through ``sys.stdout``/``sys.stderr`` (looked up per line). When
the stream is a **pipe** (a container runtime, a log shipper) or a **stream socket**
(journald), a blocking write would hang the caller as soon as the reader pauses; so
each such pipe or socket gets one :class:`_Sink`, shared by every writer of the
process that writes to it (stdout and stderr on one pipe share it too):

- The caller writes a line with one non-blocking system call: the pipe through its
  own file description (``/proc/self/fd/N`` reopened with ``O_NONBLOCK``, which
  leaves the app's ``sys.stdout`` blocking), a socket with ``MSG_DONTWAIT``.
- What does not fit goes to a bounded in-process buffer (``log_buffer_bytes``) that a
  background thread (started on the first backlog) writes as the reader takes it.
  While it holds anything, later lines queue behind it: order is kept.
- A line is written whole or not at all: when the pipe takes only the head of a line,
  its tail is kept and written before any other byte, never dropped while the process
  lives. A line that finds the buffer full is dropped whole and counted in
  ``obskit_dropped_total{signal="logs",reason="pipe_full"}``; a closed pipe
  (``EPIPE``) counts ``reason="write_error"``.
- The background thread writes whole lines, at most ``PIPE_BUF`` (4096) bytes per
  system call unless one line is longer: the kernel writes those atomically, so lines
  of up to 4 KiB from several processes on one pipe (gunicorn workers) never mix.
- :func:`flush` (``shutdown()``, and at interpreter exit) writes the buffer within a
  deadline and drops and counts the rest as ``reason="shutdown"``.
- After ``fork()`` the child starts with an empty buffer and no thread: a line
  buffered in the parent is written once, by the parent.

A caller never waits for another thread's write either: a thread that finds the sink
busy leaves its line in a queue that the holder writes before it lets go (so a signal
handler that logs while its thread is inside a write cannot deadlock).
"""

from __future__ import annotations

import atexit
import collections
import functools
import os
import select
import socket
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats

__all__ = ["DEFAULT_BUFFER_BYTES", "LineWriter", "configure", "flush"]

#: Bytes of log lines held while a pipe is full (the ``log_buffer_bytes`` default).
DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024
#: The most a pipe write may hold to be atomic (never mixed with another process's).
_ATOMIC = getattr(select, "PIPE_BUF", 4096)
_write = os.write
#: Buffers per ``writev`` call (Linux allows 1024).
_IOV = 64
#: Sockets are written with this flag (0 where it does not exist: not written by a sink).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

#: The buffer size of every sink (set by :func:`configure`).
_capacity = DEFAULT_BUFFER_BYTES
#: How long the exit hook may spend writing what is buffered.
_exit_timeout = 5.0


def configure(buffer_bytes: int, exit_timeout: float) -> None:
    """Set the buffer size of every pipe or socket and the exit hook's deadline."""
    global _capacity, _exit_timeout
    _capacity = buffer_bytes
    _exit_timeout = exit_timeout
    _register_exit()


def exit_timeout() -> float:
    """The configured flush deadline (``shutdown_timeout``), in seconds."""
    return _exit_timeout


def flush(timeout: float, final: bool = False) -> bool:
    """Write what every sink holds within ``timeout`` seconds; True if all of it went.

    At the deadline the lines still buffered are dropped and counted
    (``reason="shutdown"``), except the tail of a line whose head is already in the
    pipe: it stays, to be written before any later line, unless ``final`` (at exit).
    A sink whose last flush ran out of time is not waited for again while it is full.
    """
    deadline = time.monotonic() + timeout
    done = True
    with _registry_lock:
        sinks = list(_sinks.values())
    for sink in sinks:
        done = sink.flush(deadline, final) and done
    return done


def _flush_at_exit() -> None:
    try:
        flush(_exit_timeout, final=True)
    except BaseException:  # at exit nothing is left to catch it
        _internal_errors.count("log_write")


_exit_registered = False


def _register_exit() -> None:
    """Flush at interpreter exit (once per process).

    Registered when obskit's logging is installed (before the lifecycle's own exit
    hook, so it runs after that one: lines its ``shutdown()`` logs are written too),
    or when a sink is first made.
    """
    global _exit_registered
    if not _exit_registered:
        atexit.register(_flush_at_exit)
        _exit_registered = True


# --- one pipe or socket ------------------------------------------------------------


class _Sink:
    """One pipe or stream socket, its buffer and its background writer.

    ``lock`` guards everything below it; the caller's path takes it without waiting
    (:meth:`put`). ``backlog`` holds whole lines (bytes, newline included), except that
    ``backlog[0]`` is the unwritten tail of a line when ``partial``.
    """

    def __init__(self, key: tuple[int, int], fd: int, sock: Any) -> None:
        self.key = key
        self.fd = fd
        self.sock = sock
        # The system calls (EAGAIN raises BlockingIOError).
        self._send: Callable[[bytes], int]
        self._sendv: Callable[[list[bytes]], int]
        if sock is None:
            self._send = functools.partial(os.write, fd)
            self._sendv = functools.partial(os.writev, fd)
        else:
            self._send = self._send_socket
            self._sendv = self._sendv_socket
        #: Writers (stdout, stderr, gunicorn's) currently pointed at it.
        self.users = 0
        self.closed = False
        self._renew()

    def _renew(self) -> None:
        """Empty state: at creation, and in a forked child (the parent writes its lines)."""
        self.lock = threading.Lock()
        self.inbox: collections.deque[bytes] = collections.deque()
        self.backlog: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.partial = False
        #: A flush ran out of time (the next one waits only if the pipe has room).
        self.stalled = False
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def _send_socket(self, data: bytes) -> int:
        return int(self.sock.send(data, _DONTWAIT))

    def _sendv_socket(self, chunks: list[bytes]) -> int:
        return int(self.sock.sendmsg(chunks, (), _DONTWAIT))

    # -- the caller's path --

    def put(self, data: bytes) -> bool:
        """Write or buffer one line without blocking; False if the sink was closed."""
        lock = self.lock
        if lock.acquire(False):
            try:
                if self.backlog:  # (a closed sink's holds a marker)
                    if self.closed:
                        return False
                    self._keep(data)
                else:  # the common case, inlined: one write of the whole line
                    try:
                        written = _write(self.fd, data) if self.sock is None else self._send(data)
                    except BlockingIOError:
                        written = 0
                    except OSError:
                        self._broken(1)
                        return True
                    if written != len(data):
                        self._rest(data, written)
            finally:
                lock.release()
            if self.inbox:  # lines queued meanwhile (they were logged concurrently)
                self._after()
            return True
        # Busy (another thread, or this one interrupted by a signal handler that logs):
        # queue the line; whoever holds the lock writes it before letting go.
        self.inbox.append(data)
        self._after()
        return True

    def _after(self) -> None:
        """Write lines queued by callers that found the lock taken (after a release)."""
        while self.inbox and self.lock.acquire(False):
            try:
                if self.closed:  # its writer moved to another stream meanwhile
                    lost = len(self.inbox)
                    self.inbox.clear()
                    _self_stats.add("obskit_dropped", lost, signal="logs", reason="write_error")
                else:
                    self._drain()
            finally:
                self.lock.release()

    def _drain(self) -> None:
        inbox = self.inbox
        while inbox:
            data = inbox.popleft()
            if self.backlog:
                self._keep(data)
            else:
                self._write_line(data)

    def _write_line(self, data: bytes) -> None:
        """Write one line (nothing buffered before it); keep what does not fit."""
        try:
            written = self._send(data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._broken(1)
            return
        if written != len(data):
            self._rest(data, written)

    def _rest(self, data: bytes, written: int) -> None:
        """Buffer what the pipe did not take of ``data`` and wake the background writer."""
        if written:
            self.partial = True  # kept whatever the buffer holds: its head is out
            tail = data[written:]
            self.backlog.append(tail)
            self.buffered += len(tail)
        else:
            self._keep(data)
        self._start()

    def _keep(self, data: bytes) -> None:
        if self.buffered + len(data) > _capacity:
            _self_stats.add("obskit_dropped", signal="logs", reason="pipe_full")
            return
        self.backlog.append(data)
        self.buffered += len(data)

    def _broken(self, lines: int) -> None:
        """The pipe failed (no reader: ``EPIPE``): ``lines`` and the buffer are lost."""
        lost = lines + len(self.backlog)
        self.backlog.clear()
        self.buffered = 0
        self.partial = False
        _self_stats.add("obskit_dropped", lost, signal="logs", reason="write_error")

    def _start(self) -> None:
        """Wake the background writer (start it on first use)."""
        self.wake.set()
        thread = self.thread
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=_run, args=(weakref.ref(self),), daemon=True)
            thread.name = "obskit-log-writer"
            try:
                thread.start()
            except RuntimeError:  # interpreter exiting: the exit hook writes the buffer
                return
            self.thread = thread

    # -- the background writer's and flush()'s path --

    def _write_backlog(self) -> bool:
        """One write of whole buffered lines (lock held); whether any byte went."""
        backlog = self.backlog
        head = backlog[0]
        chunks = [head]
        size = len(head)
        if size < _ATOMIC:
            for index in range(1, min(len(backlog), _IOV)):
                chunk = backlog[index]
                if size + len(chunk) > _ATOMIC:
                    break
                chunks.append(chunk)
                size += len(chunk)
        try:
            written = self._send(head) if len(chunks) == 1 else self._sendv(chunks)
        except BlockingIOError:
            return False
        except OSError:
            self._broken(0)
            return False
        if written <= 0:
            return False
        self.buffered -= written
        while written:
            chunk = backlog[0]
            if written >= len(chunk):
                backlog.popleft()
                written -= len(chunk)
                self.partial = False
            else:
                backlog[0] = chunk[written:]
                self.partial = True
                written = 0
        return True

    def pump(self, deadline: float | None) -> bool:
        """Write the buffer as the reader takes it: True once empty, False at ``deadline``."""
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while True:
            # Bounded waits: a signal handler of the thread holding it may be calling us.
            if self.lock.acquire(timeout=0.05):
                try:
                    if self.closed:
                        return True
                    if self.inbox:
                        self._drain()
                    wrote = bool(self.backlog) and self._write_backlog()
                    empty = not self.backlog
                    if empty:
                        self.wake.clear()
                finally:
                    self.lock.release()
                if empty and not self.inbox:
                    return True
            else:
                wrote = empty = False
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            if wrote or empty:
                continue
            if poller.poll(min(left, 1.0) * 1000):
                time.sleep(0.001)  # room again: let the reader take a little more first

    def flush(self, deadline: float, final: bool) -> bool:
        if self.stalled and not _has_room(self.fd):
            deadline = 0.0  # the last flush ran out of time and it is still full
        if self.pump(deadline):
            return True
        if self.lock.acquire(timeout=1.0):
            try:
                self._drop_buffered(final)
                self.stalled = True
            finally:
                self.lock.release()
        return False

    def _drop_buffered(self, final: bool) -> None:
        keep = self.partial and not final
        lost = len(self.backlog) + len(self.inbox) - keep
        tail = self.backlog[0] if keep else b""
        self.backlog.clear()
        self.inbox.clear()
        self.buffered = len(tail)
        if keep:
            self.backlog.append(tail)
        else:
            self.partial = False
        if not keep:
            self.wake.clear()
        if lost:
            _self_stats.add("obskit_dropped", lost, signal="logs", reason="shutdown")

    def close(self) -> None:
        """Close our descriptor (no writer left; called with the registry lock held)."""
        with self.lock:
            self.closed = True
            if self.backlog:
                _self_stats.add(
                    "obskit_dropped", len(self.backlog), signal="logs", reason="shutdown"
                )
                self.backlog.clear()
            self.backlog.append(b"")  # the marker that sends put() off its fast path
            self.buffered = 0
            try:
                if self.sock is not None:
                    self.sock.close()
                else:
                    os.close(self.fd)
            except OSError:
                pass


def _has_room(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))


def _run(ref: weakref.ref[_Sink]) -> None:
    """The background writer: writes a sink's buffer whenever it holds something."""
    while True:
        sink = ref()
        if sink is None or sink.closed:
            return
        wake = sink.wake
        del sink
        wake.wait(5.0)
        sink = ref()
        if sink is None:
            return
        if sink.backlog or sink.inbox:
            try:
                sink.pump(None)
            except Exception:  # never let the writer die silently: count, go on
                _internal_errors.count("log_write")
                time.sleep(0.1)
        else:
            with sink.lock:
                if not sink.backlog:
                    sink.wake.clear()
        del sink


_sinks: dict[tuple[int, int], _Sink] = {}
#: Re-entrant: a signal handler may log (and find a new stream) while its thread is here.
_registry_lock = threading.RLock()


@after_fork.in_child
def _renew_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.RLock()
    for sink in _sinks.values():
        sink._renew()


def _acquire(stream: object) -> _Sink | None:
    """The sink of ``stream``'s pipe or socket (one more user); None for anything else."""
    fileno = stream.fileno()  # type: ignore[attr-defined]
    info = os.fstat(fileno)
    if stat.S_ISFIFO(info.st_mode):
        kind = "pipe"
    elif stat.S_ISSOCK(info.st_mode) and _DONTWAIT:
        kind = "socket"
    else:
        return None
    key = (info.st_dev, info.st_ino)
    with _registry_lock:
        sink = _sinks.get(key)
        if sink is None:
            sink = _open(fileno, kind, key)
            if sink is None:
                return None
            _sinks[key] = sink
            _register_exit()
        sink.users += 1
        return sink


def _open(fileno: int, kind: str, key: tuple[int, int]) -> _Sink | None:
    try:
        if kind == "pipe":
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
            return _Sink(key, os.open(f"/proc/self/fd/{fileno}", flags), None)
        sock = socket.socket(fileno=os.dup(fileno))
        return _Sink(key, sock.fileno(), sock)
    except Exception:  # no /proc (not Linux), no reader left: written as a file is
        return None


def _release(sink: _Sink) -> None:
    with _registry_lock:
        sink.users -= 1
        if sink.users > 0:
            return
        if sink.backlog or sink.inbox:
            return  # kept (and its buffer written) until the next flush() or exit
        _sinks.pop(sink.key, None)
        sink.close()


# --- the writer loggers write to ---------------------------------------------------


class LineWriter:
    """Writes whole lines to ``sys.stdout``/``sys.stderr`` (looked up per line).

    A pipe or socket is written through its shared sink (never blocking; see the
    module's docstring); anything else through the stream itself. A closed or broken
    stream never raises into the app: the line is dropped and counted. The writer does
    not log about it, which would recurse into itself. Lines go to a pipe directly, so
    text the app ``print()``-ed into a block-buffered ``sys.stdout`` may appear after
    later log lines (not with ``PYTHONUNBUFFERED=1``).
    """

    def __init__(self, stream: str = "stdout") -> None:
        self.stream = stream
        #: When a list, lines are appended to it instead of written (obskit.testing).
        self.capture: list[str] | None = None
        #: Serialises writes through a stream (files, terminals) and switching sinks.
        #: Re-entrant: a signal handler may log while its thread is writing.
        self._lock = threading.RLock()
        #: The stream last written to and its sink (None: not a pipe or socket).
        self._target: tuple[object, _Sink | None] = (None, None)
        # A lock held by another thread at fork time would stay held in the child.
        ref = weakref.ref(self)
        after_fork.in_child(lambda: _renew_lock(ref))
        after_fork.register()

    def msg(self, line: str) -> None:
        captured = self.capture
        if captured is not None:
            captured.append(line)
            return
        try:
            stream = getattr(sys, self.stream)
            known, sink = self._target
            if known is not stream:
                sink = self._switch(stream)
            if sink is not None:
                data = (line + "\n").encode("utf-8", "replace")
                if sink.put(data):
                    return
                # Closed meanwhile: another thread moved this writer to another stream.
                sink = self._target[1]
                if sink is None or not sink.put(data):
                    _self_stats.add("obskit_dropped", signal="logs", reason="write_error")
                return
            lock = self._lock
            lock.acquire()  # acquire/try/finally: ~1,000 instructions less than `with`
            try:
                stream.write(line + "\n")
                stream.flush()
            finally:
                lock.release()
        except Exception:
            _internal_errors.count("log_write")
            _self_stats.add("obskit_dropped", signal="logs", reason="write_error")

    def _switch(self, stream: object) -> _Sink | None:
        """Point the writer at ``stream``'s sink (releasing the previous one)."""
        with self._lock:
            known, old = self._target
            if known is stream:
                return old
            try:
                sink = _acquire(stream)
            except Exception:  # not a real file (a StringIO): written as a stream
                sink = None
            self._target = (stream, sink)
        if old is not None:
            _release(old)
        return sink

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def _renew_lock(ref: weakref.ref[LineWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer._lock = threading.RLock()
