"""How the micro-benchmarks time their cases: a case is ``calls -> seconds per call``,
and every case runs once per round, round after round, so that a slower stretch of a
busy machine hits all of them alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

#: A benchmark case: run ``calls`` calls, return the mean seconds per call.
Case = Callable[[int], float]


def timed(call: Callable[[], Any]) -> Case:
    """``call`` as a :data:`Case`: a plain loop of it, timed with ``perf_counter``."""

    def run(calls: int) -> float:
        started = perf_counter()
        for _ in range(calls):
            call()
        return (perf_counter() - started) / calls

    return run


def interleaved(cases: Mapping[str, Case], rounds: int, calls: int) -> dict[str, list[float]]:
    """Each case warmed up (a tenth of ``calls``), then ``rounds`` rounds in which every
    case runs ``calls`` calls in turn; the seconds per call of each round, by case."""
    for case in cases.values():
        case(calls // 10)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            samples[name].append(case(calls))
    return samples
