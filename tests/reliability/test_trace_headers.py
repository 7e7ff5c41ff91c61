"""Scenario 6: hostile traceparent / tracestate / baggage through Flask and Django.

The vectors follow the W3C trace-context test suite (github.com/w3c/trace-context,
test/test.py) and W3C baggage; the pass criteria are issue #9's: always 2xx, a new
root trace for an invalid traceparent, continuation for a valid one, no exception, and
every log line valid JSON within ``log_max_line_bytes``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.receivers import OtlpHttpReceiver
from tests.reliability.conftest import Reply, Target, coverage_paused
from tests.servers import Server, raw_get

T = "0af7651916cd43dd8448eb211c80319c"
P = "b7ad6b7169203331"
VALID = f"00-{T}-{P}-01"
CAP = 4096  # log_max_line_bytes for these tests: the smallest round value above the minimum
FRAMEWORKS = ["flask", "django"]

# (traceparent value, continues?) — W3C trace-context test suite, test_traceparent_*.
TRACEPARENTS: list[tuple[str, bool]] = [
    (VALID, True),
    (f"00-{T}-{P}-00", True),  # not sampled: still the caller's trace
    (f"00-{T}-{P}-09", True),  # unknown flag bits are kept, not an error
    (f"cc-{T}-{P}-01", True),  # a future version
    (f"cc-{T}-{P}-01-what-the-future-will-be-like", True),  # future version, extra field
    (f" {VALID}", True),  # leading / trailing OWS (space, tab) is ignored
    (f"\t{VALID}", True),
    (f"{VALID} ", True),
    (f"{VALID}\t", True),
    (f"\t {VALID} \t", True),
    ("", False),
    ("garbage", False),
    (f"00-{T}-{P}-01.", False),  # trailing junk
    (f"00-{T}-{P}-01-what-the-future-will-be-like", False),  # version 00 has 4 fields
    (f"cc-{T}-{P}-01.what-the-future-will-be-like", False),
    (f"ff-{T}-{P}-01", False),  # version ff is forbidden
    (f".0-{T}-{P}-01", False),
    (f"0.-{T}-{P}-01", False),
    (f"000-{T}-{P}-01", False),
    (f"0-{T}-{P}-01", False),
    (f"00-{'0' * 32}-{P}-01", False),  # all-zero trace id
    (f"00-.{T[1:]}-{P}-01", False),
    (f"00-{T[:-1]}.-{P}-01", False),
    (f"00-{T}0-{P}-01", False),  # 33 hex digits
    (f"00-{T[:-1]}-{P}-01", False),  # 31
    (f"00-{T.upper()}-{P}-01", False),  # uppercase hex
    (f"00-{T}-{'0' * 16}-01", False),  # all-zero parent id
    (f"00-{T}-.{P[1:]}-01", False),
    (f"00-{T}-{P[:-1]}.-01", False),
    (f"00-{T}-{P}0-01", False),  # 17
    (f"00-{T}-{P[:-1]}-01", False),  # 15
    (f"00-{T}-{P.upper()}-01", False),
    (f"00-{T}-{P}-.0", False),  # flags
    (f"00-{T}-{P}-0.", False),
    (f"00-{T}-{P}-001", False),
    (f"00-{T}-{P}-0", False),
    (f"00-{T}-{P}-0A", False),
    (f"00-x{T[1:]}-{P}-01", False),  # not hex
    ("00-" + "a" * 8192, False),  # 8 KiB
    (f"00-{T}-{P}-01-" + "x" * 8192, False),
    ("00-" + "é" * 32 + f"-{P}-01", False),  # non-ASCII (latin-1 text, as WSGI carries it)
    (f"00-{T}-{P}-01" + "ü", False),
]


def _is_new_root(reply: Reply) -> bool:
    return reply.parent_id is None and reply.trace_id != T


def _lines_ok(target: Target) -> None:
    for line in target.lines():
        assert len(line.encode()) <= CAP
        json.loads(line)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_w3c_traceparent_vectors(framework: str, target: Callable[..., Target]) -> None:
    """Each W3C vector: 200; valid forms continue the caller's trace, invalid ones start
    a new root trace; every log line stays valid JSON within the cap."""
    app = target(framework, traces_sampler="always_on", log_max_line_bytes=CAP)
    for header, continues in TRACEPARENTS:
        reply = app.get([("traceparent", header)])
        assert reply.status == 200, header
        if continues:
            assert (reply.trace_id, reply.parent_id) == (T, P), header
        else:
            assert _is_new_root(reply), header
    _lines_ok(app)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_duplicated_traceparent_is_invalid(framework: str, target: Callable[..., Target]) -> None:
    """Two traceparent headers (joined with "," by the server) are invalid: a new root,
    whether the two agree or not (W3C test_traceparent_duplicated)."""
    app = target(framework, traces_sampler="always_on")
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    for second in (other, VALID):
        reply = app.get([("traceparent", VALID), ("traceparent", second)])
        assert reply.status == 200
        assert _is_new_root(reply)
        assert reply.trace_id != "1" * 32


MEMBERS_32 = ",".join(f"k{n}=v{n}" for n in range(32))
MEMBERS_33 = ",".join(f"k{n}=v{n}" for n in range(33))
# (tracestate header values, tracestate the server span keeps) — W3C test_tracestate_*.
TRACESTATES: list[tuple[list[str], str]] = [
    (["foo=1,bar=2"], "foo=1,bar=2"),
    (["foo=1 ,\t bar=2"], "foo=1,bar=2"),  # OWS around members
    (["foo=1", "bar=2"], "foo=1,bar=2"),  # two headers are combined
    (["foo=1,,bar=2"], "foo=1,bar=2"),  # empty members are allowed
    ([MEMBERS_32], MEMBERS_32),
    ([MEMBERS_33], ""),  # more than 32 members: dropped
    (["foo=1,foo=2"], ""),  # duplicated key
    (["FOO=1"], ""),  # illegal key characters
    (["foo@=1,bar=2"], ""),
    (["@foo=1"], ""),
    (["foo@@bar=1"], ""),
    (["foo=bar=baz"], ""),  # illegal value
    (["foo=" + "v" * 257], ""),  # value longer than 256
    (["k" * 257 + "=1"], ""),  # key longer than 256
    (["foo=1," + ",".join(f"k{n}={'v' * 200}" for n in range(45))], ""),  # > 8 KiB
    (["foo=é"], ""),  # non-ASCII
    (["garbage"], ""),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tracestate_limits_drop_the_state_and_keep_the_trace(
    framework: str, target: Callable[..., Target]
) -> None:
    """A valid tracestate is kept; an invalid or oversized one (33 members, > 8 KiB,
    duplicates, illegal keys or values) is dropped while the trace still continues."""
    app = target(framework, log_max_line_bytes=CAP)
    for values, kept in TRACESTATES:
        headers = [("traceparent", VALID)] + [("tracestate", value) for value in values]
        reply = app.get(headers)
        assert reply.status == 200
        assert (reply.trace_id, reply.parent_id) == (T, P)
        assert reply.json()["tracestate"] == kept, values
    _lines_ok(app)


def _baggage(n: int, width: int = 1) -> str:
    return ",".join(f"k{i}={'v' * width}" for i in range(n))


# (baggage header, number of entries kept) — W3C baggage limits as OpenTelemetry applies
# them: at most 180 members (the rest dropped), 4096 bytes per member, 8192 per header.
BAGGAGE: list[tuple[str, int]] = [
    ("k=v", 1),
    (_baggage(180), 180),
    (_baggage(181), 180),  # members beyond 180 are dropped
    (_baggage(400), 180),
    (_baggage(50, 200), 0),  # > 8192 bytes: the header is dropped
    ("big=" + "v" * 4100 + ",small=1", 1),  # a member over 4096 bytes is dropped
    ("k=é,ok=1", 1),  # non-ASCII member dropped
    ("garbage", 0),
    (";;;,==,", 0),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_oversized_baggage_is_dropped_or_truncated_never_an_error(
    framework: str, target: Callable[..., Target]
) -> None:
    """Baggage over the W3C limits is truncated to 180 members or dropped, never an
    error; the trace continues and log lines stay within the cap."""
    app = target(framework, log_max_line_bytes=CAP)
    for header, kept in BAGGAGE:
        reply = app.get([("traceparent", VALID), ("baggage", header)])
        assert reply.status == 200
        assert reply.trace_id == T
        assert len(reply.json()["baggage"]) == kept, header[:40]
    _lines_ok(app)


def w3c_continues(value: str) -> bool:
    """An independent reading of W3C trace-context §3.2 (plus OpenTelemetry's 512-character
    limit on the raw header): whether ``value`` is a traceparent to continue."""
    if len(value) > 512:
        return False
    value = value.strip(" \t")
    hex_digits = set("0123456789abcdef")
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return False
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if not set(version + trace_id + parent_id + flags) <= hex_digits or version == "ff":
        return False
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return False
    if version == "00":
        return len(value) == 55
    return len(value) == 55 or value[55] == "-"


# Header text a server can carry: tab, printable ASCII and latin-1 (no CR/LF/NUL).
_text = st.text(
    st.sampled_from(["\t", *map(chr, range(0x20, 0x7F)), *map(chr, range(0xA0, 0x100))]),
    max_size=60,
)
# Every combination of valid and broken traceparent parts (23,040 values): hypothesis picks
# from the product in one draw, which keeps 10,000 triples to seconds, not minutes.
_NEAR_VALID = [
    f"{pad}{version}-{trace}-{parent}-{flags}{extra}{pad}"
    for version, trace, parent, flags, extra, pad in itertools.product(
        ["00", "01", "cc", "fe", "ff", "0", "000", "0A"],
        [T, "0" * 32, T.upper(), T[:-1], T + "0"],
        [P, "0" * 16, P[:-1], P + "a"],
        ["00", "01", "ff", "0", "001", "zz"],
        ["", "-", "-future", ".x", "-é", " "],
        ["", " ", "\t", " \t "],
    )
]
_MEMBERS = ["foo=1", "k=v", "FOO=1", "a@b=c", "x=é", "=", "", " ", "k=" + "v" * 300, "t@v=1"]
TRACEPARENT = st.one_of(
    st.sampled_from(_NEAR_VALID),
    _text,
    st.integers(1, 9000).map(lambda n: "00-" + "a" * n),
)
_members = st.one_of(
    st.lists(st.sampled_from(_MEMBERS), max_size=40).map(",".join),
    _text,
    st.sampled_from([MEMBERS_32, MEMBERS_33, *(header for header, _ in BAGGAGE)]),
)
STATE = st.one_of(st.none(), _members)
BAGGAGE_VALUES = st.one_of(st.none(), _members)
TRIPLES = st.tuples(TRACEPARENT, STATE, BAGGAGE_VALUES)
FUZZ_EXAMPLES = int(os.environ.get("OBSKIT_FUZZ_EXAMPLES", "10000"))
BATCH = 50  # triples per hypothesis example: amortises the engine's per-example cost


@pytest.mark.slow
def test_fuzzed_header_triples_through_flask(target: Callable[..., Target]) -> None:
    """10,000 generated (traceparent, tracestate, baggage) triples: always 200, the trace
    continued exactly when the traceparent is valid, bounded state, lines within the cap.

    Driven in-process (raw WSGI environ, as gunicorn builds it) for speed: 10,000 real
    HTTP round trips would cost minutes; the real-server batch below covers the socket path.
    """
    app = target("flask", traces_sampler="always_on", log_max_line_bytes=CAP)
    seen = {"continued": 0, "new root": 0}

    @settings(settings.get_profile("obskit-fuzz"), max_examples=FUZZ_EXAMPLES // BATCH)
    @given(st.lists(TRIPLES, min_size=BATCH, max_size=BATCH))
    def check(triples: list[tuple[str, str | None, str | None]]) -> None:
        for traceparent, tracestate, baggage in triples:
            headers = [("traceparent", traceparent)]
            headers += [("tracestate", tracestate)] if tracestate is not None else []
            headers += [("baggage", baggage)] if baggage is not None else []
            reply = app.get(headers)
            assert reply.status == 200
            if w3c_continues(traceparent):
                assert reply.parent_id == traceparent.strip(" \t")[36:52]
                seen["continued"] += 1
            else:
                assert _is_new_root(reply)
                seen["new root"] += 1
            context = reply.json()
            assert len(context["baggage"]) <= 180
            assert context["tracestate"].count(",") < 32
        _lines_ok(app)

    with coverage_paused():
        check()
    assert sum(seen.values()) >= FUZZ_EXAMPLES
    assert min(seen.values()) > FUZZ_EXAMPLES // 50  # both branches were exercised


@pytest.mark.slow
def test_hostile_headers_through_a_real_gunicorn(
    gunicorn: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """The W3C vectors plus duplicated headers over real HTTP to gunicorn: always 200;
    the exported server span continues valid traceparents and is a new root otherwise."""
    server = gunicorn(
        "gthread",
        "tests.reliability.apps:create_flask_app()",
        OTEL_TRACES_SAMPLER="always_on",
        OBSKIT_LOG_MAX_LINE_BYTES=str(CAP),
    )
    # gunicorn itself answers 431 to a header field over 8190 bytes, before the app runs.
    cases = [([("traceparent", header)], ok) for header, ok in TRACEPARENTS if len(header) < 8190]
    cases += [([("traceparent", VALID), ("traceparent", VALID)], False)]
    oversized = [("traceparent", VALID), ("tracestate", MEMBERS_33), ("baggage", _baggage(400))]
    cases += [(oversized, True)]
    new_roots: set[str] = set()
    for headers, continues in cases:
        status, reply_headers, _ = raw_get(server.port, "/context", headers)
        assert status == 200, headers
        trace_id = reply_headers["traceresponse"].split("-")[1]
        assert (trace_id == T) is continues, headers
        if not continues:
            new_roots.add(trace_id)
    expected = sum(continues for _, continues in cases)
    http_receiver.wait_for_traces({T}, expected, timeout=60)  # two workers export
    received = http_receiver.wait_for_traces(new_roots, 1, timeout=60)
    continued = [s.parent_span_id for s in received if s.trace_id == T]
    assert continued == [P] * expected
    roots = {s.trace_id: s.parent_span_id for s in received if s.trace_id in new_roots}
    assert roots == dict.fromkeys(new_roots, "")
    server.stop()
    for line in server.stdout_path.read_text().splitlines():
        assert len(line.encode()) <= CAP
        json.loads(line)
