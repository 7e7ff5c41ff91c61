"""Flame graphs of a :class:`~obskit._profiles.window.Window`: a standalone SVG, a
self-contained HTML page (the SVG plus click-to-zoom and search) and Brendan Gregg's
folded-stack text.

The root is at the bottom and each caller sits below its callees; a frame's width is
proportional to its samples. Frames are merged by ``(function, file)`` along the path
(the tooltip names the line with the most samples). The size of the output is bounded
whatever the window holds: frames narrower than 0.1 % of the samples are left out (their
samples stay in their caller's width), at most :data:`MAX_FRAMES` rectangles are drawn,
and names are cut to a few hundred characters.

Function and file names come from the profiled program and are untrusted: every one is
escaped for XML/HTML (``<``, ``&``, quotes), its control characters made visible and
characters XML cannot hold replaced, so the file always parses. Nothing refers to a
network resource.
"""

from __future__ import annotations

import re
import zlib
from html import escape
from typing import NamedTuple

from obskit._profiles.window import OVERFLOW_FRAME, Stack, Window
from obskit._terminal import escape_controls

__all__ = ["MAX_FRAMES", "MIN_FRACTION", "folded", "html", "svg"]

#: A frame narrower than this fraction of all samples is not drawn.
MIN_FRACTION = 0.001
#: At most this many rectangles are drawn (the widest ones; a frame's caller is never
#: narrower than the frame, so the kept ones always reach the root).
MAX_FRAMES = 3000

_WIDTH = 1200  # pixels
_PAD = 10
_ROW = 16  # pixels per stack level
_TOP = 56  # room for the title and the summary line
_FONT = 11
_CHAR = 6.6  # the width of one character of an 11px monospace font, about
_MAX_NAME = 200
_MAX_FILE = 240
_ROOT_NAME = "all"

#: What XML 1.0 cannot hold at all (even as a character reference), after the control
#: characters are escaped: lone surrogates (undecodable file names) and U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


class _Box(NamedTuple):
    """One frame to draw: its function, file and line (the one with the most samples),
    its samples (its own and its callees'), its level (0: the root) and its first
    sample (its left edge)."""

    name: str
    file: str
    line: int
    total: int
    level: int
    start: int


_Item = tuple[Stack, int]  # a stack root first, and its samples


def _layout(window: Window) -> tuple[int, list[_Box]]:
    """All samples, and the frames to draw, each one's caller before it.

    Stacks sharing a drawn path are grouped by their next frame, level by level; a group
    too narrow to draw is not looked into again, so a window of many small stacks costs
    little whatever their depth.
    """
    items: list[_Item] = [
        (tuple(reversed(stack)), count) for (stack, _), count in window.counts.items() if count > 0
    ]
    total = sum(count for _, count in items)
    if total <= 0:
        return 0, []
    smallest = max(1.0, total * MIN_FRACTION)
    boxes = [_Box(_ROOT_NAME, "", 0, total, 0, 0)]
    pending = [(items, 0, 0)]
    while pending:  # bounded: each drawn frame is pending once
        members, level, start = pending.pop()
        groups: dict[tuple[str, str], list[_Item]] = {}
        for item in members:
            stack = item[0]
            if len(stack) > level:
                function, file, _ = stack[level]
                groups.setdefault((function, file), []).append(item)
        offset = start
        for key in sorted(groups):
            group = groups[key]
            size = sum(count for _, count in group)
            if size >= smallest:
                lines: dict[int, int] = {}
                for stack, count in group:
                    lines[stack[level][2]] = lines.get(stack[level][2], 0) + count
                line = min(lines.items(), key=lambda item: (-item[1], item[0]))[0]
                boxes.append(_Box(key[0], key[1], line, size, level + 1, offset))
                pending.append((group, level + 1, offset))
            offset += size
    if len(boxes) > MAX_FRAMES:
        # The widest ones, callers before callees on a tie: every kept frame's caller
        # is kept too.
        order = sorted(range(len(boxes)), key=lambda i: (-boxes[i].total, boxes[i].level, i))
        boxes = [boxes[i] for i in sorted(order[:MAX_FRAMES])]
    return total, boxes


def _one_line(text: str) -> str:
    """``text`` on one line, holding only what XML and UTF-8 can (escapes instead)."""
    return _NOT_XML.sub(lambda match: f"\\u{ord(match.group()):04x}", escape_controls(text))


def _clean(text: str, limit: int, keep_end: bool = False) -> str:
    """:func:`_one_line`, at most ``limit`` characters (cut at the end, or at the start
    for a file name, whose end says the most)."""
    text = _one_line(text)
    if len(text) > limit:
        text = "…" + text[len(text) - limit + 1 :] if keep_end else text[: limit - 1] + "…"
    return text


def _colour(name: str, file: str) -> str:
    """A warm colour that depends only on the function's name."""
    if (name, file) == OVERFLOW_FRAME[:2]:
        return "rgb(190,190,190)"
    if name == _ROOT_NAME and not file:
        return "rgb(230,110,50)"
    digest = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    red = 205 + (digest >> 16 & 0xFF) * 50 // 255
    green = (digest & 0xFF) * 230 // 255
    blue = (digest >> 8 & 0xFF) * 55 // 255
    return f"rgb({red},{green},{blue})"


def _label(name: str, width: float) -> str:
    """As much of ``name`` as fits in a box ``width`` pixels wide ("" when too little)."""
    fits = int((width - 6) / _CHAR)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _samples(count: int) -> str:
    return f"{count:,} sample" + ("" if count == 1 else "s")


def _summary(window: Window) -> str:
    parts = [_samples(window.samples)]
    if window.period_ns > 0:
        parts.append(f"{_number(1e9 / window.period_ns)} Hz")
    if window.end_ns > window.start_ns:
        parts.append(f"{(window.end_ns - window.start_ns) / 1e9:.2f} s")
    if window.overflow:
        parts.append(f"{_samples(window.overflow)} beyond the distinct stack limit")
    return ", ".join(parts)


def _svg(window: Window, title: str, interactive: bool) -> str:
    total, boxes = _layout(window)
    depth = max((box.level for box in boxes), default=0)
    height = _TOP + (depth + 1) * _ROW + _PAD
    scale = (_WIDTH - 2 * _PAD) / total if total else 0.0
    namespace = "" if interactive else ' xmlns="http://www.w3.org/2000/svg"'
    out = [
        f'<svg{namespace} id="flamegraph" width="{_WIDTH}" height="{height}"'
        f' viewBox="0 0 {_WIDTH} {height}" font-family="monospace" font-size="{_FONT}">',
        "<style>text{pointer-events:none}g.f rect{stroke:#fff;stroke-width:0.5}"
        "g.f:hover rect{stroke:#000}</style>",
        f'<rect width="{_WIDTH}" height="{height}" fill="#fdfaf4"/>',
        f'<text x="{_WIDTH // 2}" y="22" text-anchor="middle" font-size="16">'
        f"{escape(_clean(title, _MAX_NAME))}</text>",
        f'<text x="{_WIDTH // 2}" y="42" text-anchor="middle">{escape(_summary(window))}</text>',
    ]
    if not boxes:
        out.append(f'<text x="{_PAD}" y="{_TOP + _FONT}">no samples</text>')
    for box in boxes:
        name = _clean(box.name, _MAX_NAME)
        file = _clean(box.file, _MAX_FILE, keep_end=True)
        where = f" ({file}:{box.line})" if box.file else ""
        tip = f"{name}{where} — {_samples(box.total)}, {100.0 * box.total / total:.2f}%"
        x = _PAD + box.start * scale
        width = box.total * scale
        y = height - _PAD - (box.level + 1) * _ROW
        data = f' data-n="{escape(name)}"' if interactive else ""
        out.append(
            f'<g class="f"{data}><title>{escape(tip)}</title>'
            f'<rect x="{_number(x)}" y="{y}" width="{_number(width)}" height="{_ROW - 1}"'
            f' fill="{_colour(box.name, box.file)}"/>'
            f'<text x="{_number(x + 3)}" y="{y + 11.5}">{escape(_label(name, width))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def svg(window: Window, title: str) -> str:
    """A standalone SVG flame graph of ``window`` (hover a frame for its function, file,
    line, samples and share)."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _svg(window, title, interactive=False)


def html(window: Window, title: str) -> str:
    """A self-contained HTML page with the flame graph of ``window``: click a frame to
    zoom into it (click the bottom frame to zoom out), type in the box to highlight the
    functions whose name contains the text. It loads nothing from the network."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(_clean(title, _MAX_NAME))}</title>\n"
        "<style>body{font-family:sans-serif;margin:8px}g.f{cursor:pointer}"
        "#bar{margin:0 0 6px 10px}#bar input{width:20em}</style>\n</head>\n<body>\n"
        '<div id="bar"><input id="search" type="search" placeholder="highlight functions'
        ' containing…"> <button id="reset" type="button">reset zoom</button>'
        ' <span id="matched"></span></div>\n'
        + _svg(window, title, interactive=True)
        + f"<script>\n{_SCRIPT}</script>\n</body>\n</html>\n"
    )


# Frames keep their first position (x, w, y); a zoom maps the chosen frame's span onto
# the full width, stretches its callers, and hides what is outside it.
_SCRIPT = f"""(function () {{
  var W = {_WIDTH - 2 * _PAD}, P = {_PAD}, C = {_CHAR}, E = 0.01;
  var frames = Array.prototype.slice.call(document.querySelectorAll("#flamegraph g.f"));
  function label(n, w) {{
    var fits = Math.floor((w - 6) / C);
    return fits < 3 ? "" : n.length <= fits ? n : n.slice(0, fits - 2) + "..";
  }}
  function place(g, x, w) {{
    g.style.display = "";
    g.r.setAttribute("x", x.toFixed(2));
    g.r.setAttribute("width", w.toFixed(2));
    g.t.setAttribute("x", (x + 3).toFixed(2));
    g.t.textContent = label(g.n, w);
  }}
  function zoom(z) {{
    var s = W / z.w;
    frames.forEach(function (g) {{
      if (g.y > z.y && g.x <= z.x + E && g.x + g.w >= z.x + z.w - E) place(g, P, W);
      else if (g.y <= z.y && g.x >= z.x - E && g.x + g.w <= z.x + z.w + E)
        place(g, P + (g.x - z.x) * s, g.w * s);
      else g.style.display = "none";
    }});
  }}
  frames.forEach(function (g) {{
    g.r = g.querySelector("rect");
    g.t = g.querySelector("text");
    g.x = +g.r.getAttribute("x");
    g.w = +g.r.getAttribute("width");
    g.y = +g.r.getAttribute("y");
    g.n = g.getAttribute("data-n");
    g.fill = g.r.getAttribute("fill");
    g.addEventListener("click", function () {{ zoom(g); }});
  }});
  document.getElementById("reset").addEventListener("click", function () {{
    frames.forEach(function (g) {{ place(g, g.x, g.w); }});
  }});
  document.getElementById("search").addEventListener("input", function (event) {{
    var term = event.target.value.toLowerCase(), spans = [], total = 0, end = -1;
    frames.forEach(function (g) {{
      var hit = term !== "" && g.n.toLowerCase().indexOf(term) >= 0;
      g.r.setAttribute("fill", hit ? "rgb(230,0,230)" : g.fill);
      if (hit) spans.push([g.x, g.x + g.w]);
    }});
    spans.sort(function (a, b) {{ return a[0] - b[0]; }});
    spans.forEach(function (s) {{
      if (s[1] > end) {{ total += s[1] - Math.max(s[0], end); end = s[1]; }}
    }});
    document.getElementById("matched").textContent =
      term === "" ? "" : "matched: " + (100 * total / W).toFixed(1) + "%";
  }});
}})();
"""


def folded(window: Window) -> str:
    """Brendan Gregg's folded stacks: one ``root;…;leaf count`` line per distinct stack
    of function names (labels and lines merged), sorted. A ``;`` in a name becomes
    ``:`` and control characters (and lone surrogates) are escaped, so each line parses
    back and encodes as UTF-8."""
    lines: dict[str, int] = {}
    for (stack, _labels), count in window.counts.items():
        if count <= 0:
            continue
        names = [_one_line(function).replace(";", ":") for function, _, _ in stack]
        key = ";".join(reversed(names)) or "[unknown]"
        lines[key] = lines.get(key, 0) + count
    return "".join(f"{key} {lines[key]}\n" for key in sorted(lines))
