"""What the sampler hands over every interval: the samples of one time window,
aggregated by stack and labels.

A stack is a tuple of frames, **innermost first** (pprof's order: a sample's first
location is the leaf). A frame is ``(function name, file name, line number)``. Labels are
a tuple of ``(key, value)`` pairs: ``http.route``, ``span_id``, ``span_name`` and
``trace_id`` (sorted; none outside a span), then ``thread_name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OVERFLOW_FRAME", "Frame", "Labels", "Stack", "Window"]

Frame = tuple[str, str, int]
Stack = tuple[Frame, ...]
Labels = tuple[tuple[str, str], ...]

#: The one frame of the stack that stands for samples whose stack was not kept (the
#: window already held ``max_stacks`` distinct stacks): totals stay right.
OVERFLOW_FRAME: Frame = ("[other stacks: distinct stack limit reached]", "", 0)


@dataclass
class Window:
    """Samples taken from ``start_ns`` to ``end_ns`` (``time.time_ns()``), one every
    ``period_ns`` nanoseconds per thread: ``counts`` maps ``(stack, labels)`` to the number
    of samples; ``overflow`` counts samples whose stack was folded into
    :data:`OVERFLOW_FRAME`."""

    start_ns: int
    end_ns: int
    period_ns: int
    counts: dict[tuple[Stack, Labels], int] = field(default_factory=dict)
    overflow: int = 0

    @property
    def samples(self) -> int:
        """Every sample in the window."""
        return sum(self.counts.values())
