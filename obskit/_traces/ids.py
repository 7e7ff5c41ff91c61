"""Trace and span ids: where new ones come from, and their hex text.

New ids come from the operating system's random source (``os.urandom``), never from
the process-global ``random``. That one is a Mersenne Twister: 624 of its outputs give
away its whole state, and one ``traceresponse`` header shows six (a 128-bit trace id
and a 64-bit span id), so 104 responses would let any client predict every id the
process makes next — and every number the application itself draws from ``random``.

The OS source costs a system call, so it is read a block at a time (4 KiB: 512 span
ids or 256 trace ids) into a per-process buffer that hands out one slice per id:

- thread-safe: a slice is handed out by one C-level ``next()`` on an iterator, which
  the GIL makes atomic; two threads that find the buffer used up at once each read a
  new block, and neither block is ever handed out twice (on a free-threaded build a
  lock does it);
- fork-safe: a forked child drops the buffer it inherited (through obskit's after-fork
  registry, whose hook is installed at the latest when the first block is read), so it
  never repeats the ids its parent hands out next;
- never a zero id (the all-zero id is invalid): zeros are skipped.

:class:`OsRandomIdGenerator` is the SDK id generator obskit's tracer provider uses; the
fast span path calls :func:`new_trace_id` and :func:`new_span_id` directly.
"""

from __future__ import annotations

import os
import struct
import sysconfig
import threading
from collections.abc import Iterator
from itertools import repeat
from typing import Literal

from opentelemetry.sdk.trace.id_generator import IdGenerator

from obskit._fast.ids import flags_and_validity, hex_ids
from obskit._lifecycle import after_fork

__all__ = [
    "OsRandomIdGenerator",
    "flags_and_validity",
    "hex_ids",
    "new_span_id",
    "new_trace_id",
]

#: Bytes read from the OS at a time.
_BLOCK = 4096
#: A block as 16-byte pieces, one per trace id.
_TRACE_PIECES = struct.Struct("16s" * (_BLOCK // 16))
_EMPTY: Iterator[int] = iter(())
_BIG: repeat[Literal["big"]] = repeat("big")  #: byte order of every piece (any would do)

#: The span ids and trace ids of the current blocks not yet handed out.
_span_ids: Iterator[int] = _EMPTY
_trace_ids: Iterator[int] = _EMPTY


def _span_block() -> Iterator[int]:
    """A new block of span ids (made current): 64-bit ints, zeros left out."""
    global _span_ids
    after_fork.register()  # per-process state from now on (a no-op once installed)
    # cast("Q"): the block read as native 64-bit unsigned ints, in C (byte order is moot).
    _span_ids = block = filter(None, memoryview(os.urandom(_BLOCK)).cast("Q").tolist())
    return block


def _trace_block() -> Iterator[int]:
    """A new block of trace ids (made current): 128-bit ints, zeros left out."""
    global _trace_ids
    after_fork.register()
    pieces = _TRACE_PIECES.unpack(os.urandom(_BLOCK))
    # Converted lazily, one id per next(), all in C (map of a builtin, then filter).
    _trace_ids = block = filter(None, map(int.from_bytes, pieces, _BIG))
    return block


def new_span_id() -> int:
    """A new span id: 64 random bits from the OS, never zero."""
    span_id: int = next(_span_ids, 0)
    while not span_id:  # the block is used up (zeros are skipped): read another
        span_id = next(_span_block(), 0)
    return span_id


def new_trace_id() -> int:
    """A new trace id: 128 random bits from the OS, never zero."""
    trace_id: int = next(_trace_ids, 0)
    while not trace_id:
        trace_id = next(_trace_block(), 0)
    return trace_id


if sysconfig.get_config_var("Py_GIL_DISABLED"):  # pragma: no cover - free-threaded builds
    # Without the GIL, next() on a shared iterator is not atomic: take a lock.
    _unlocked_span_id, _unlocked_trace_id = new_span_id, new_trace_id
    _lock = threading.Lock()

    def new_span_id() -> int:
        """A new span id: 64 random bits from the OS, never zero."""
        with _lock:
            return _unlocked_span_id()

    def new_trace_id() -> int:
        """A new trace id: 128 random bits from the OS, never zero."""
        with _lock:
            return _unlocked_trace_id()


@after_fork.in_child
def _forget() -> None:
    """In a forked child: drop the parent's blocks (the parent hands those ids out)."""
    global _span_ids, _trace_ids
    _span_ids = _trace_ids = _EMPTY


class OsRandomIdGenerator(IdGenerator):
    """The SDK id generator of obskit's tracer provider: ids from the OS random source.

    Shares no state with the process-global ``random``; no number of observed ids
    predicts the next. The 56 rightmost bits of a trace id are uniformly random, as the
    W3C ``random-trace-id`` flag (and ``TraceIdRatioBased``) require.
    """

    generate_span_id = staticmethod(new_span_id)
    generate_trace_id = staticmethod(new_trace_id)

    def is_trace_id_random(self) -> bool:
        """True: every bit of a trace id is random."""
        return True
