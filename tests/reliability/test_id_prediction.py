"""The id prediction attack: a client recovers the Mersenne Twister state behind the ids.

Every response carries ``traceresponse: 00-<trace id>-<span id>-<flags>``: 128 + 64 bits.
Ids drawn with ``random.getrandbits`` are six 32-bit outputs of the process-global
Mersenne Twister, which keeps 624 such words of state and gives each out after an
invertible "tempering". So 104 responses hand a client 624 consecutive outputs: it
untempers them, holds a clone of the generator, and predicts every later id — and
every number the application draws from ``random`` (a one-time code, a reset token).

The control runs the attack against a real Flask app whose tracer provider uses the
SDK's ``RandomIdGenerator`` (what obskit used to do) and must succeed; the same attack
against obskit's own ids must fail.
"""

from __future__ import annotations

import random

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

import obskit

MASK = 0xFFFFFFFF
RESPONSES = 104  # x 6 words = 624, the Mersenne Twister's whole state


def _undo_right(value: int, shift: int) -> int:
    """Invert ``y ^= y >> shift`` on 32 bits."""
    result = value
    for _ in range(32 // shift + 1):
        result = value ^ (result >> shift)
    return result & MASK


def _undo_left(value: int, shift: int, mask: int) -> int:
    """Invert ``y ^= (y << shift) & mask`` on 32 bits."""
    result = value
    for _ in range(32 // shift + 1):
        result = value ^ ((result << shift) & mask)
    return result & MASK


def untemper(output: int) -> int:
    """The state word behind one 32-bit output of MT19937 (tempering steps, reversed)."""
    value = _undo_right(output, 18)
    value = _undo_left(value, 15, 0xEFC60000)
    value = _undo_left(value, 7, 0x9D2C5680)
    return _undo_right(value, 11)


def clone_from(outputs: list[int]) -> random.Random:
    """A generator in the state the observed one is in after giving out ``outputs``."""
    assert len(outputs) == 624
    state = tuple(untemper(word) for word in outputs)
    clone = random.Random()
    clone.setstate((3, (*state, 624), None))
    return clone


def words(trace_id: int, span_id: int) -> list[int]:
    """The 32-bit outputs ``getrandbits(128)`` then ``getrandbits(64)`` consumed, in
    order (``getrandbits`` fills an int from its least significant word up)."""
    return [(trace_id >> shift) & MASK for shift in (0, 32, 64, 96)] + [
        span_id & MASK,
        span_id >> 32,
    ]


def observed(client: FlaskClient, path: str = "/") -> tuple[int, int]:
    """(trace id, span id) from a response's ``traceresponse`` header."""
    header = client.get(path).headers["traceresponse"]
    _, trace_id, span_id, _ = header.split("-")
    return int(trace_id, 16), int(span_id, 16)


def make_app(codes: list[int]) -> Flask:
    """A shop: ``/`` is public, ``/send-code`` mails a one-time code (kept in ``codes``,
    never shown to the client)."""
    app = Flask(__name__)
    obskit.instrument_flask(app)

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.get("/send-code")
    def send_code() -> str:
        codes.append(random.randint(100_000, 999_999))
        return "code sent"

    return app


def attack(client: FlaskClient, codes: list[int]) -> tuple[int, int]:
    """Observe 104 responses, then predict 20 ids and 10 one-time codes; the hits."""
    outputs: list[int] = []
    for _ in range(RESPONSES):
        outputs += words(*observed(client))
    clone = clone_from(outputs)
    id_hits = 0
    for _ in range(10):
        predicted = (clone.getrandbits(128), clone.getrandbits(64))
        trace_id, span_id = observed(client)
        id_hits += (trace_id == predicted[0]) + (span_id == predicted[1])
    code_hits = 0
    for _ in range(10):
        clone.getrandbits(128)  # the request's trace and span ids
        clone.getrandbits(64)
        guess = clone.randint(100_000, 999_999)
        observed(client, "/send-code")
        code_hits += guess == codes[-1]
    return id_hits, code_hits


def _sdk_random_ids(handle: obskit.Telemetry) -> None:
    """What obskit did before: ids from the SDK's RandomIdGenerator (``random.getrandbits``)."""
    provider = handle.tracer_provider
    assert provider is not None
    provider.id_generator = RandomIdGenerator()
    handle.tracer = provider.get_tracer("control")  # the SDK caches tracers per scope


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])
def test_the_attack_works_against_ids_from_the_global_random(fast_paths: bool) -> None:
    """Control: with ``random.getrandbits`` ids, 104 traceresponse headers predict the next
    20 ids and the next 10 one-time codes exactly (so the attack below is a real one)."""
    handle = obskit.init(service_name="shop", traces_exporter="none", fast_paths=fast_paths)
    _sdk_random_ids(handle)
    codes: list[int] = []
    id_hits, code_hits = attack(make_app(codes).test_client(), codes)
    assert (id_hits, code_hits) == (20, 10)


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "public"])
def test_the_attack_fails_against_obskit_ids(fast_paths: bool) -> None:
    """With obskit's ids, the recovered "state" predicts none of the next 20 ids, and the
    one-time codes no better than a blind guess (one in 900,000 each)."""
    obskit.init(service_name="shop", traces_exporter="none", fast_paths=fast_paths)
    codes: list[int] = []
    id_hits, code_hits = attack(make_app(codes).test_client(), codes)
    assert id_hits == 0
    assert code_hits <= 1  # two blind hits in ten: about 1e-10
    assert len(codes) == 10
