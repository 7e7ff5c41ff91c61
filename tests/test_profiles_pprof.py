"""Profiles as pprof: ``go tool pprof`` reads what obskit writes (the busiest function,
the span and trace ids of the samples, stacks innermost first, the resource), and the
encoding round-trips through protobuf with every field pprof defines where obskit puts
it."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obskit._profiles import pprof
from obskit._profiles.window import OVERFLOW_FRAME, Window
from tests.go_pprof import pprof as go_pprof
from tests.pyroscope_server import sample_labels, window_counts

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
OTHER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_SPAN_ID = "00f067aa0ba902b7"
START_NS = 1_700_000_000_123_456_789
PERIOD_NS = 10_000_000

LEAF = ("crunch", "/app/shop/pricing.py", 41)
MIDDLE = ("price_cart", "/app/shop/pricing.py", 12)
HANDLER = ("checkout", "/app/shop/views.py", 30)
OTHER_LEAF = ("render", "/app/shop/views.py", 55)
SLEEPER = ("wait", "/usr/lib/python3.11/threading.py", 320)


def _window() -> Window:
    """Two spans' samples, one thread outside any span, and overflow samples."""
    window = Window(START_NS, START_NS + 15_000_000_000, PERIOD_NS)
    in_span = (
        ("http.route", "/checkout"),
        ("span_id", SPAN_ID),
        ("span_name", "POST /checkout"),
        ("thread_name", "MainThread"),
        ("trace_id", TRACE_ID),
    )
    other_span = (
        ("span_id", OTHER_SPAN_ID),
        ("span_name", "GET /cart"),
        ("thread_name", "worker-1"),
        ("trace_id", OTHER_TRACE_ID),
    )
    window.counts[((LEAF, MIDDLE, HANDLER), in_span)] = 40
    window.counts[((OTHER_LEAF, HANDLER), other_span)] = 15
    window.counts[((SLEEPER,), (("thread_name", "background"),))] = 9
    window.counts[((OVERFLOW_FRAME,), (("thread_name", "MainThread"),))] = 3
    window.overflow = 3
    return window


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile.pb.gz"
    path.write_bytes(pprof.encode(_window(), resource={"service.name": "checkout"}))
    return path


def _top_rows(text: str) -> list[tuple[int, str]]:
    """``go tool pprof -top``'s rows: (flat, function)."""
    rows = []
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("flat"))
    for line in lines[start + 1 :]:
        fields = line.split(maxsplit=5)
        if len(fields) == 6:
            rows.append((int(fields[0]), fields[5]))
    return rows


def test_go_pprof_top_lists_the_busiest_function_first(profile_file: Path) -> None:
    """``go tool pprof -top`` (sample counts) shows the innermost frame sampled most
    first with its sample count, and the window's total."""
    text = go_pprof(profile_file, "-top", "-sample_index=samples")
    assert "Total samples = 67" in text
    rows = _top_rows(text)
    assert rows[0] == (40, "crunch")
    assert (15, "render") in rows
    assert (9, "wait") in rows
    assert (3, OVERFLOW_FRAME[0]) in rows


def test_go_pprof_top_shows_wall_time_from_the_period(profile_file: Path) -> None:
    """The default sample type is wall time: samples times the 10 ms period."""
    text = go_pprof(profile_file, "-top", "-unit=ms")
    assert "Type: wall" in text
    assert "Total samples = 670ms" in text
    assert "Duration: 15s" in text


def test_go_pprof_tags_show_the_span_and_trace_ids_put_in(profile_file: Path) -> None:
    """``go tool pprof -tags`` lists each span id and trace id with its samples."""
    text = go_pprof(profile_file, "-tags", "-sample_index=samples")
    sections = _tag_sections(text)
    assert sections["span_id"] == {SPAN_ID: 40, OTHER_SPAN_ID: 15}
    assert sections["trace_id"] == {TRACE_ID: 40, OTHER_TRACE_ID: 15}
    assert sections["http.route"] == {"/checkout": 40}
    assert sections["span_name"] == {"POST /checkout": 40, "GET /cart": 15}
    assert sections["thread_name"] == {"MainThread": 43, "worker-1": 15, "background": 9}


def _tag_sections(text: str) -> dict[str, dict[str, float]]:
    """``-tags`` output as {key: {value: samples}}."""
    sections: dict[str, dict[str, float]] = {}
    current: dict[str, float] = {}
    for line in text.splitlines():
        if ": Total " in line:
            current = sections.setdefault(line.split(":")[0].strip(), {})
        elif "%):" in line:
            amount, _, rest = line.strip().partition("(")
            current[rest.partition("):")[2].strip()] = float(amount)
    return sections


def test_go_pprof_tagfocus_selects_one_span(profile_file: Path) -> None:
    """``-tagfocus span_id=...`` keeps only that span's samples."""
    text = go_pprof(profile_file, "-top", "-sample_index=samples", f"-tagfocus=span_id={SPAN_ID}")
    rows = _top_rows(text)
    assert rows[0] == (40, "crunch")
    assert {function for _, function in rows} == {"crunch", "price_cart", "checkout"}


def test_go_pprof_traces_show_each_stack_innermost_first(profile_file: Path) -> None:
    """``go tool pprof -traces`` prints the span's stack leaf first, down to its root."""
    text = go_pprof(profile_file, "-traces")
    blocks = text.split("-----------+")
    (block,) = [b for b in blocks if SPAN_ID in b]
    functions = [
        line.split()[-1] for line in block.splitlines() if line.startswith(" ") and ":" not in line
    ]
    assert functions == ["crunch", "price_cart", "checkout"]


def test_go_pprof_raw_shows_files_and_lines(profile_file: Path) -> None:
    """``-raw`` lists every location with its function, file and line."""
    text = go_pprof(profile_file, "-raw")
    assert "crunch /app/shop/pricing.py:41" in text
    assert "checkout /app/shop/views.py:30" in text
    assert "PeriodType: wall nanoseconds" in text
    assert f"Period: {PERIOD_NS}" in text


def test_go_pprof_comments_show_the_resource(profile_file: Path) -> None:
    """``go tool pprof -comments`` prints the resource attributes as key=value."""
    assert go_pprof(profile_file, "-comments").strip() == "service.name=checkout"


def test_round_trip_keeps_every_sample_stack_and_label() -> None:
    """decode(encode(window)) holds the same samples by stack and labels."""
    window = _window()
    profile = pprof.decode(pprof.encode(window))
    assert window_counts(profile) == window.counts


def test_profile_fields_are_where_pprof_defines_them() -> None:
    """Sample and period types, period, start and duration, the string table starting
    with "", one function per (name, file) and one location per frame with ids from 1,
    values [count, count x period] and the overflow samples as a one-frame stack."""
    profile = pprof.decode(pprof.encode(_window(), resource={"service.name": "checkout"}))
    table = list(profile.string_table)
    assert table[0] == ""
    assert len(set(table)) == len(table)
    text = lambda index: table[index]  # noqa: E731
    assert [(text(t.type), text(t.unit)) for t in profile.sample_type] == [
        ("samples", "count"),
        ("wall", "nanoseconds"),
    ]
    assert (text(profile.period_type.type), text(profile.period_type.unit)) == (
        "wall",
        "nanoseconds",
    )
    assert profile.period == PERIOD_NS
    assert profile.time_nanos == START_NS
    assert profile.duration_nanos == 15_000_000_000
    assert [text(c) for c in profile.comment] == ["service.name=checkout"]
    assert [f.id for f in profile.function] == list(range(1, 7))
    assert sorted((text(f.name), text(f.filename)) for f in profile.function) == sorted(
        {
            (name, file)
            for name, file, _ in (LEAF, MIDDLE, HANDLER, OTHER_LEAF, SLEEPER, OVERFLOW_FRAME)
        }
    )
    assert [loc.id for loc in profile.location] == list(range(1, 7))
    assert all(len(loc.line) == 1 for loc in profile.location)
    for sample in profile.sample:
        count, wall = sample.value
        assert wall == count * PERIOD_NS
    (overflow,) = [s for s in profile.sample if len(s.location_id) == 1 and s.value[0] == 3]
    (location,) = [loc for loc in profile.location if loc.id == overflow.location_id[0]]
    (function,) = [f for f in profile.function if f.id == location.line[0].function_id]
    assert text(function.name) == OVERFLOW_FRAME[0]


def test_a_function_on_several_lines_is_one_function_with_several_locations() -> None:
    """Frames of one function at different lines share its Function, each its Location."""
    window = Window(START_NS, START_NS + 1, PERIOD_NS)
    window.counts[((("loop", "/a.py", 3),), ())] = 1
    window.counts[((("loop", "/a.py", 4),), ())] = 1
    window.counts[((("loop", "/b.py", 4),), ())] = 1
    profile = pprof.decode(pprof.encode(window))
    assert len(profile.function) == 2
    assert len(profile.location) == 3


def test_labels_as_strings_false_merges_samples_of_a_stack() -> None:
    """Without labels, the samples of one stack under different labels are one sample."""
    window = Window(START_NS, START_NS + 1, PERIOD_NS)
    window.counts[((LEAF,), (("span_id", SPAN_ID),))] = 2
    window.counts[((LEAF,), (("span_id", OTHER_SPAN_ID),))] = 5
    profile = pprof.decode(pprof.encode(window, labels_as_strings=False))
    assert window_counts(profile) == {((LEAF,), ()): 7}
    assert sample_labels(profile) == [{}]


def test_an_empty_window_is_a_valid_profile_without_samples() -> None:
    """A window with no samples encodes to a profile with none."""
    profile = pprof.decode(pprof.encode(Window(START_NS, START_NS + 5, PERIOD_NS)))
    assert list(profile.sample) == []
    assert profile.period == PERIOD_NS


def test_the_output_is_gzip_and_deterministic() -> None:
    """encode() returns gzip (what pprof files and Pyroscope expect), the same bytes for
    the same window (no timestamp in the gzip header)."""
    data = pprof.encode(_window())
    assert data[:2] == b"\x1f\x8b"
    assert data == pprof.encode(_window())
    assert pprof.decode(gzip.decompress(data)) == pprof.decode(data)


def test_decode_refuses_a_profile_that_unzips_too_large() -> None:
    """A gzip bomb stops at max_bytes with ValueError, never unzipped whole."""
    with pytest.raises(ValueError, match="more than 1000 bytes"):
        pprof.decode(gzip.compress(b"\0" * 100_000), max_bytes=1000)


def test_decode_refuses_a_cut_gzip_stream() -> None:
    """A truncated gzip profile is refused with ValueError."""
    data = pprof.encode(_window())
    with pytest.raises(ValueError, match="cut short"):
        pprof.decode(data[: len(data) // 2])


def test_importing_obskit_and_the_encoder_imports_no_protobuf() -> None:
    """``import obskit`` and importing the pprof module leave protobuf unimported; it is
    imported at the first encode."""
    code = (
        "import sys, obskit, obskit._profiles.pprof as p, obskit._profiles.window as w\n"
        "print('google.protobuf' in sys.modules)\n"
        "p.encode(w.Window(0, 1, 1))\n"
        "print('google.protobuf' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "True"]


_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_frames = st.tuples(_names, _names, st.integers(0, 100_000))
_labels = st.dictionaries(
    st.sampled_from(["trace_id", "span_id", "span_name", "http.route", "thread_name"]),
    _names,
    max_size=5,
).map(lambda d: tuple(sorted(d.items())))


@settings(max_examples=60, deadline=None)
@given(
    counts=st.dictionaries(
        st.tuples(st.lists(_frames, max_size=6).map(tuple), _labels),
        st.integers(1, 10**6),
        max_size=12,
    ),
    period=st.integers(1, 10**9),
)
def test_any_window_round_trips(counts: dict[Any, int], period: int) -> None:
    """Any stacks, labels (any text, empty included) and counts come back as they went in."""
    window = Window(START_NS, START_NS + 10**9, period, dict(counts))
    profile = pprof.decode(pprof.encode(window))
    assert window_counts(profile) == window.counts
    assert profile.period == period
