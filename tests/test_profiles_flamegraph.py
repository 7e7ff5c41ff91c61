"""Flame graphs of hand-built windows: the SVG, the HTML page and the folded stacks."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest

from obskit._profiles import flamegraph
from obskit._profiles.window import OVERFLOW_FRAME, Frame, Labels, Window

_SVG = "{http://www.w3.org/2000/svg}"
_USABLE = 1180.0  # the SVG's width less its margins


def _window(*stacks: tuple[list[Frame], int], labels: Labels = ()) -> Window:
    """A window of ``(frames root first, samples)``: stored innermost first, as the
    sampler does."""
    window = Window(start_ns=0, end_ns=2_000_000_000, period_ns=10_000_000)
    for frames, count in stacks:
        key = (tuple(reversed(frames)), labels)
        window.counts[key] = window.counts.get(key, 0) + count
    return window


def _frames(root: ET.Element, ns: str = _SVG) -> list[dict[str, str | float]]:
    """Each drawn frame: its tooltip, rectangle and label."""
    found = []
    for group in root.iter(f"{ns}g"):
        if group.get("class") != "f":
            continue
        rect = group.find(f"{ns}rect")
        title = group.find(f"{ns}title")
        text = group.find(f"{ns}text")
        assert rect is not None
        assert title is not None
        assert text is not None
        found.append(
            {
                "title": title.text or "",
                "label": text.text or "",
                "x": float(rect.get("x", "")),
                "y": float(rect.get("y", "")),
                "width": float(rect.get("width", "")),
                "fill": rect.get("fill", ""),
                "name": group.get("data-n", ""),
            }
        )
    return found


def _by_name(frames: list[dict[str, str | float]], name: str) -> list[dict[str, str | float]]:
    return [frame for frame in frames if str(frame["title"]).startswith(f"{name} ")]


def _inline_svg(page: str) -> ET.Element:
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    return ET.fromstring(page[start:end])


MAIN = ("<module>", "/app/main.py", 1)
HANDLE = ("handle", "/app/main.py", 10)
PARSE = ("parse", "/app/parse.py", 20)
RENDER = ("render", "/app/render.py", 30)


def test_svg_parses_with_widths_proportional_to_samples_and_callers_below() -> None:
    """The SVG parses as XML; each frame's width is its share of the samples, the root
    spans the whole width at the bottom and every callee sits on its caller."""
    window = _window(([MAIN, HANDLE, PARSE], 60), ([MAIN, HANDLE, RENDER], 30), ([MAIN], 10))
    frames = _frames(ET.fromstring(flamegraph.svg(window, "checkout")))
    (root,) = _by_name(frames, "all")
    (main,) = _by_name(frames, "<module>")
    (handle,) = _by_name(frames, "handle")
    (parse,) = _by_name(frames, "parse")
    (render,) = _by_name(frames, "render")
    assert root["width"] == pytest.approx(_USABLE)
    for frame, samples in ((main, 100), (handle, 90), (parse, 60), (render, 30)):
        assert frame["width"] == pytest.approx(_USABLE * samples / 100, abs=0.01)
    assert root["y"] > main["y"] > handle["y"] > parse["y"] == render["y"]
    assert parse["x"] == handle["x"] == main["x"]
    assert render["x"] == pytest.approx(float(parse["x"]) + float(parse["width"]), abs=0.01)
    assert parse["title"] == "parse (/app/parse.py:20) — 60 samples, 60.00%"
    assert root["title"] == "all — 100 samples, 100.00%"


def test_frames_merge_by_function_and_file_and_show_the_busiest_line() -> None:
    """Frames of one function and file on one path merge whatever their line (the
    tooltip names the line with the most samples); the same name in another file stays
    apart."""
    window = _window(
        ([MAIN, ("work", "/app/a.py", 5)], 3),
        ([MAIN, ("work", "/app/a.py", 7)], 5),
        ([MAIN, ("work", "/app/b.py", 5)], 2),
    )
    frames = _frames(ET.fromstring(flamegraph.svg(window, "t")))
    titles = sorted(str(frame["title"]) for frame in _by_name(frames, "work"))
    assert titles == [
        "work (/app/a.py:7) — 8 samples, 80.00%",
        "work (/app/b.py:5) — 2 samples, 20.00%",
    ]


HOSTILE_NAME = "evil<script>alert('x')</script>&\"quoted\"\x1b[31m\x00\ud800\ufffe"
HOSTILE_FILE = '/tmp/</title><a href="x">&amp;.py'


def test_hostile_names_are_escaped_in_the_svg_and_the_page() -> None:
    """Function and file names with markup, quotes, control characters and characters
    XML cannot hold leave both outputs well-formed, shown as text (no element, no
    script, no control character)."""
    window = _window(([(HOSTILE_NAME, HOSTILE_FILE, 3)], 4), ([MAIN], 4))
    shown = "evil<script>alert('x')</script>&\"quoted\"\\x1b[31m\\x00\\ud800\\ufffe"
    title = "<b>&'\"\x07"
    image = flamegraph.svg(window, title)
    page = flamegraph.html(window, title)
    for root, ns in ((ET.fromstring(image.encode("utf-8")), _SVG), (_inline_svg(page), "")):
        (frame,) = _by_name(_frames(root, ns), shown)
        assert frame["title"] == f"{shown} ({HOSTILE_FILE}:3) — 4 samples, 50.00%"
        tags = {element.tag.rpartition("}")[2] for element in root.iter()}
        assert tags <= {"svg", "style", "rect", "text", "g", "title"}
    assert page.count("<script") == 1  # the page's own
    assert "<b>" not in page
    assert "<b>" not in image
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", image + page)
    assert (_by_name(_frames(_inline_svg(page), ""), shown)[0]["name"]) == shown


def test_html_page_loads_nothing_from_the_network() -> None:
    """The page is self-contained: no URL but the SVG namespace, no src or href, no
    stylesheet link; its script and style are inline."""
    window = _window(([MAIN, HANDLE, PARSE], 5), ([MAIN, RENDER], 1))
    page = flamegraph.html(window, "checkout")
    assert set(re.findall(r"https?://[^\s\"'<>]*", page)) <= {"http://www.w3.org/2000/svg"}
    assert not re.search(r"\b(src|href|xlink:href)\s*=", page)
    assert "<link" not in page
    assert "@import" not in page
    assert "url(" not in page
    assert "<script>" in page
    assert "addEventListener" in page


def test_frames_narrower_than_a_thousandth_are_merged_into_their_caller() -> None:
    """A frame with under 0.1 % of the samples is not drawn; its caller keeps its width."""
    window = _window(([MAIN, HANDLE], 1999), ([MAIN, ("rare", "/app/rare.py", 1)], 1))
    frames = _frames(ET.fromstring(flamegraph.svg(window, "t")))
    assert _by_name(frames, "rare") == []
    (main,) = _by_name(frames, "<module>")
    assert main["width"] == pytest.approx(_USABLE)


def _many_stacks(seed: int) -> Window:
    """10,000 distinct stacks: 500 call paths 40 frames deep with long names, each
    ending in functions of their own (a worst case for the number of frames drawn)."""
    rng = random.Random(seed)
    window = Window(start_ns=0, end_ns=60_000_000_000, period_ns=10_000_000)
    for i in range(10_000):
        branch = i % 500
        path: list[Frame] = [
            (
                f"package.module_{branch}.SomeClass.a_rather_long_method_name_{depth}",
                f"/srv/app/.venv/lib/python3.12/site-packages/package/module_{branch}.py",
                depth + 1,
            )
            for depth in range(40)
        ]
        path.append((f"leaf_{i}", "/srv/app/leaf.py", rng.randint(1, 500)))
        window.counts[(tuple(reversed(path)), (("thread_name", f"t{i % 7}"),))] = rng.randint(1, 3)
    return window


def test_size_is_bounded_for_ten_thousand_distinct_stacks() -> None:
    """For 10,000 distinct stacks the SVG and the page stay under 1.5 MB, at most
    MAX_FRAMES rectangles, every one standing on its caller."""
    window = _many_stacks(7)
    image = flamegraph.svg(window, "big")
    page = flamegraph.html(window, "big")
    assert len(image.encode("utf-8")) < 1_500_000
    assert len(page.encode("utf-8")) < 1_500_000
    frames = _frames(ET.fromstring(image))
    assert 1 < len(frames) <= flamegraph.MAX_FRAMES
    assert not _by_name(frames, "leaf_1")  # 1 to 3 samples of about 20,000: merged away
    rows: dict[float, list[tuple[float, float]]] = {}
    for frame in frames:
        rows.setdefault(float(frame["y"]), []).append(
            (float(frame["x"]), float(frame["x"]) + float(frame["width"]))
        )
    for frame in frames:
        below = rows.get(float(frame["y"]) + 16)
        if below is None:  # the root
            assert frame["title"].startswith("all ")  # type: ignore[union-attr]
            continue
        left, right = float(frame["x"]), float(frame["x"]) + float(frame["width"])
        assert any(a - 0.01 <= left and right <= b + 0.01 for a, b in below), frame


def test_labels_are_clipped_to_their_box_and_long_names_cut() -> None:
    """Each label fits in its rectangle (about 6.6 px a character) and a very long name
    is cut in the tooltip too."""
    long_name = "f" * 5000
    window = _window(
        ([MAIN, (long_name, "/app/x.py", 1)], 50), ([MAIN, HANDLE], 49), ([MAIN, PARSE], 1)
    )
    frames = _frames(ET.fromstring(flamegraph.svg(window, "t")))
    for frame in frames:
        assert len(str(frame["label"])) * 6.6 <= float(frame["width"]), frame
    (long_frame,) = _by_name(frames, "f" * 199 + "…")
    assert long_frame["title"] == "f" * 199 + "… (/app/x.py:1) — 50 samples, 50.00%"
    assert re.fullmatch("f{80,}[.][.]", str(long_frame["label"]))
    (handle,) = _by_name(frames, "handle")
    assert handle["label"] == "handle"
    (parse,) = _by_name(frames, "parse")
    assert parse["label"] == ""  # 11.8 px: no room for a readable name


def test_colours_are_warm_and_follow_the_function_name() -> None:
    """A function has one colour wherever it appears, from a warm palette."""
    window = _window(([MAIN, HANDLE, PARSE], 5), ([MAIN, PARSE], 5))
    frames = _frames(ET.fromstring(flamegraph.svg(window, "t")))
    fills = {str(frame["fill"]) for frame in _by_name(frames, "parse")}
    assert len(fills) == 1
    for frame in frames:
        red, green, blue = map(int, re.findall(r"\d+", str(frame["fill"])))
        assert red >= 205
        assert blue <= 55
        assert green <= 230
    again = _frames(ET.fromstring(flamegraph.svg(window, "t")))
    assert [frame["fill"] for frame in again] == [frame["fill"] for frame in frames]


def test_overflow_and_empty_windows_are_drawn() -> None:
    """Samples beyond the distinct stack limit are one grey frame and named in the
    summary; an empty window gives a graph that says it has no samples."""
    window = _window(([MAIN], 8))
    window.counts[((OVERFLOW_FRAME,), ())] = 2
    window.overflow = 2
    image = flamegraph.svg(window, "t")
    (other,) = _by_name(_frames(ET.fromstring(image)), OVERFLOW_FRAME[0])
    assert other["fill"] == "rgb(190,190,190)"
    assert other["title"] == f"{OVERFLOW_FRAME[0]} — 2 samples, 20.00%"
    assert "2 samples beyond the distinct stack limit" in image
    empty = flamegraph.svg(Window(0, 0, 10_000_000), "t")
    assert _frames(ET.fromstring(empty)) == []
    assert "no samples" in empty
    assert "no samples" in flamegraph.html(Window(0, 0, 10_000_000), "t")


def test_folded_stacks_are_exact() -> None:
    """Folded text is one ``root;…;leaf count`` line per stack of function names, root
    first, sorted; stacks differing only in labels or lines merge; a ``;`` in a name
    becomes ``:`` and control characters are escaped."""
    a = ("a", "/x.py", 1)
    b = ("b", "/x.py", 2)
    window = _window(
        ([a, b, ("c", "/x.py", 3)], 4), ([a, b], 2), ([a, ("we;ird\n", "/y.py", 1)], 1)
    )
    window.counts[((("c", "/x.py", 99), b, a), (("thread_name", "other"),))] = 3
    assert flamegraph.folded(window) == "a;b 2\na;b;c 7\na;we:ird\\n 1\n"
    assert flamegraph.folded(Window(0, 0, 1)) == ""
