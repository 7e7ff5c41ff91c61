"""How far a request's incoming trace context is trusted.

A caller's ``traceparent`` (or another propagator's headers) chooses the trace id the
request's spans join and, through its sampled flag, whether they are recorded. From an
untrusted caller that is a lever (W3C Trace Context, section 7): ``-01`` on every
request forces every trace to be recorded and exported, ``-00`` hides the caller's
requests, and a chosen trace id writes spans into someone else's trace.

``trace_context_incoming`` says what obskit does with it:

- ``continue`` (the default): the request joins the caller's trace. Its sampled flag
  is honoured while the per-process budget ``incoming_sampled_per_second`` lasts, for
  the traces the local sampler would not record itself; beyond it the local sampler
  decides, with a random draw (never on the caller's trace id, which the caller chose).
- ``restart``: a new root trace, sampled by the local sampler alone, with a span link
  to the caller's context (so the two traces can still be joined); baggage is kept.
- ``ignore``: as if the request carried no context at all, baggage included.

The budget only applies to parent-based samplers (the ``parentbased_*`` ones): the
others never follow a parent's flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Link, NonRecordingSpan, SpanContext, TraceFlags

from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._traces.ids import new_span_id

if TYPE_CHECKING:
    from obskit._config.settings import Settings

__all__ = ["SampledBudget", "extract"]

#: The empty context: the parent of a request that continues nothing.
_NOTHING = otel_context.Context()
_SAMPLED = TraceFlags.SAMPLED
_ID_RANGE = 1 << 64  #: new_span_id() draws from [1, 2**64)


class SampledBudget:
    """A token bucket: at most ``rate`` traces per second, up to a second's worth at once.

    Thread-safe; one per process (a forked child starts with a full bucket of its own).
    """

    __slots__ = ("_lock", "_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0) if rate > 0 else 0.0
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one token if there is one; whether there was."""
        if not self.capacity:
            return False
        with self._lock:
            now = time.monotonic()
            tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if tokens >= 1.0:
                self._tokens = tokens - 1.0
                return True
            self._tokens = tokens
            return False


#: The settings of the current ``init()`` and their budget (a new one per ``init()``).
_budget: tuple[object, SampledBudget] | None = None


@after_fork.in_child
def _renew_budget() -> None:
    global _budget
    _budget = None  # (its lock may be held by a thread that does not exist here)


def _take(settings: Settings) -> bool:
    """A token from this process's budget of ``incoming_sampled_per_second``."""
    global _budget
    current = _budget
    if current is None or current[0] is not settings:
        current = _budget = (settings, SampledBudget(settings.incoming_sampled_per_second))
    return current[1].take()


def _sampler_samples(settings: Settings) -> bool:
    """Whether the local (root) sampler records a new trace: a fresh random draw."""
    root = settings.traces_sampler.removeprefix("parentbased_")
    if root == "always_on":
        return True
    if root == "always_off":
        return False
    return new_span_id() < settings.traces_sampler_arg * _ID_RANGE


def extract(
    carrier: Mapping[str, str], settings: Settings
) -> tuple[otel_context.Context, Link | None]:
    """The parent context of a request with headers ``carrier``, and the link to give its
    span (``restart``: the caller's context), per ``trace_context_incoming``.

    Never raises: a propagator that fails counts as an internal error and the request
    continues nothing.
    """
    mode = settings.trace_context_incoming
    if mode == "ignore":
        return _NOTHING, None
    try:
        extracted = propagate.extract(carrier)
    except Exception as error:  # a propagator must not break the request
        _internal_errors.report("http.extract", error)
        return _NOTHING, None
    caller = trace.get_current_span(extracted).get_span_context()
    if not caller.is_valid:
        return extracted, None  # baggage only, or nothing
    if mode == "restart":
        # A new root (the invalid span in the caller's place), baggage kept.
        return trace.set_span_in_context(INVALID_SPAN, extracted), Link(caller)
    if (
        caller.trace_flags & _SAMPLED
        and settings.traces_sampler.startswith("parentbased_")
        and not _sampler_samples(settings)
        and not _take(settings)
    ):
        # Over budget: the caller's flag is not honoured; the local sampler said no.
        unsampled = SpanContext(
            caller.trace_id,
            caller.span_id,
            is_remote=True,
            trace_flags=TraceFlags(caller.trace_flags & ~_SAMPLED),
            trace_state=caller.trace_state,
        )
        return trace.set_span_in_context(NonRecordingSpan(unsampled), extracted), None
    return extracted, None
