"""The hex text of span ids: what ``"%032x"``/``"%016x"`` give, for every id a context holds."""

from __future__ import annotations

import random

from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext

from obskit._traces.ids import hex_ids


def test_hex_ids_are_the_zero_padded_lowercase_hex_of_the_ids() -> None:
    """Edges and random ids, and contexts out of range (invalid: the fallback formats)."""
    rng = random.Random(4)
    pairs = [(1, 1), (2**128 - 1, 2**64 - 1), (0xABC, 0xDEF)]
    pairs += [(rng.getrandbits(128), rng.getrandbits(64)) for _ in range(1000)]
    pairs += [(2**128, 2**64), (-1, -2)]  # is_valid is False; still formatted as before
    for trace_id, span_id in pairs:
        context = SpanContext(trace_id, span_id, is_remote=False)
        assert hex_ids(context) == (context, "%032x" % trace_id, "%016x" % span_id)  # noqa: UP031
    assert hex_ids(INVALID_SPAN_CONTEXT)[1:] == ("0" * 32, "0" * 16)


def test_the_last_context_is_answered_from_the_cache() -> None:
    context = SpanContext(5, 6, is_remote=False)
    assert hex_ids(context) is hex_ids(context)
