"""Make the documentation's pictures from obskit's own output.

    python docs/pictures/make_pictures.py            # rewrites docs/pictures/*.svg
    python docs/pictures/make_pictures.py OUTDIR     # writes them elsewhere

Each picture is a real run, on a pseudo-terminal (so colours and widths are what a
person sees), drawn as an SVG terminal window:

- ``demo.svg``: ``obskit demo`` on a 100-column terminal;
- ``quickstart.svg``: on a 140-column terminal, the README's quickstart app (its
  ``app.py`` block, as written) under ``OTEL_TRACES_EXPORTER=console flask --app app
  run``, after one ``POST /orders/42/pay``: a log line, the request's waterfall and the
  access line;
- ``flamegraph.svg``: the flame graph ``obskit profile --format svg`` writes for
  ``examples/report_job.py``.

Ids, ports and timings differ from run to run; ``tests/test_docs.py`` checks that the
checked-in pictures exist, are SVG and show what the pages say they show.
"""

from __future__ import annotations

import html
import os
import re
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COLUMNS = 100
#: The quickstart's terminal: wide enough for a console log line's ids.
QUICKSTART_COLUMNS = 140

#: Colours of a dark terminal theme, by SGR foreground code.
PALETTE = {
    30: "#7f7f7f",
    31: "#f47067",
    32: "#57d18b",
    33: "#e8c547",
    34: "#6cb6ff",
    35: "#dcbdfb",
    36: "#56d4dd",
    37: "#e6e6e6",
}
FOREGROUND, BACKGROUND = "#d4d4d4", "#1e2127"
FONT_SIZE, CHAR_WIDTH, LINE_HEIGHT, PAD, TOP = 13, 7.8, 17, 14, 34
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_OTHER_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]")


def ansi_to_svg(text: str, title: str, columns: int = COLUMNS) -> str:
    """Terminal ``text`` (with SGR colour codes) as an SVG window ``columns`` wide;
    longer lines are cut with ``…``."""
    lines = _OTHER_ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "")).split("\n")
    while lines and not _SGR.sub("", lines[-1]).strip():
        lines.pop()
    width = round(2 * PAD + columns * CHAR_WIDTH)
    height = TOP + PAD + LINE_HEIGHT * len(lines)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect width="{width}" height="{height}" rx="8" fill="{BACKGROUND}"/>',
        '<circle cx="20" cy="17" r="6" fill="#ff5f57"/>',
        '<circle cx="40" cy="17" r="6" fill="#febc2e"/>',
        '<circle cx="60" cy="17" r="6" fill="#28c840"/>',
        f'<text x="{width / 2:.0f}" y="21" fill="#8b949e" font-size="12"'
        f' font-family="sans-serif" text-anchor="middle">{html.escape(title)}</text>',
        f'<g font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_SIZE}"'
        f' fill="{FOREGROUND}">',
    ]
    for row, line in enumerate(lines):
        y = TOP + PAD + row * LINE_HEIGHT
        spans = "".join(_spans(line, columns))
        if spans:
            out.append(f'<text y="{y}">{spans}</text>')
    out += ["</g>", "</svg>"]
    return "\n".join(out) + "\n"


def _spans(line: str, columns: int) -> list[str]:
    """The ``<tspan>``s of one line: each run of one style at its column."""
    pieces: list[str] = []
    column = 0
    color: str | None = None
    bold = dim = False
    position = 0
    for match in [*_SGR.finditer(line), None]:
        end = match.start() if match is not None else len(line)
        chunk = line[position:end]
        if chunk and column < columns:
            if column + len(chunk) > columns:
                chunk = chunk[: columns - column - 1] + "…"
            attributes = f'x="{PAD + column * CHAR_WIDTH:.1f}"'
            if color:
                attributes += f' fill="{color}"'
            if bold:
                attributes += ' font-weight="bold"'
            if dim:
                attributes += ' fill-opacity="0.6"'
            # No-break spaces: SVG collapses runs of ordinary ones, and columns must align.
            text = html.escape(chunk, quote=False).replace(" ", "\u00a0")
            pieces.append(f"<tspan {attributes}>{text}</tspan>")
        column += len(chunk)
        if match is None:
            break
        position = match.end()
        for code in [int(part) for part in match.group(1).split(";") if part] or [0]:
            if code == 0:
                color, bold, dim = None, False, False
            elif code == 1:
                bold = True
            elif code == 2:
                dim = True
            elif code == 22:
                bold = dim = False
            elif code == 39:
                color = None
            elif 30 <= code <= 37:
                color = PALETTE[code]
            elif 90 <= code <= 97:
                color = PALETTE[code - 60]
    return pieces


def _on_terminal(args: list[str], **options: Any) -> str:
    """``python -m ARGS`` on a pseudo-terminal (the tests' runner: ``tests/terminal.py``);
    what it printed."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.terminal import run_on_terminal

    _, output = run_on_terminal(args, **options)
    return output


def demo() -> str:
    """``obskit demo``'s output on a terminal."""
    return _on_terminal(["obskit", "demo"], columns=COLUMNS)


def readme_app() -> str:
    """The README quickstart's ``app.py`` block, as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    return str(block)


def quickstart() -> str:
    """The quickstart app's terminal after one ``POST /orders/42/pay``."""
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "app.py").write_text(readme_app(), encoding="utf-8")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            "OTEL_TRACES_EXPORTER": "console",
            "FLASK_RUN_PORT": str(port),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }

        def post(_: str) -> None:
            url = f"http://127.0.0.1:{port}/orders/42/pay"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    request = urllib.request.Request(url, data=b"", method="POST")
                    with urllib.request.urlopen(request, timeout=5) as reply:
                        reply.read()
                    return
                except OSError:
                    time.sleep(0.2)
            raise RuntimeError("the quickstart app did not answer")

        # Once the app starts, one request; once its access line shows, Ctrl-C.
        text = _on_terminal(
            ["flask", "--app", "app", "run"],
            env=env,
            cwd=Path(work),
            columns=QUICKSTART_COLUMNS,
            until=lambda seen: "Serving Flask app" in seen or "POST /orders/42/pay 200" in seen,
            then=post,
        )
    lines = text.split("\n")
    # From the request's first line on: the dev server's start-up banner is not obskit's.
    first = next(i for i, line in enumerate(lines) if "card charged" in line)
    last = max(i for i, line in enumerate(lines) if "POST /orders/42/pay 200" in line)
    return "\n".join(lines[first : last + 1]) + "\n"


def flamegraph() -> str:
    """The SVG flame graph ``obskit profile`` writes for ``examples/report_job.py``."""
    import subprocess

    with tempfile.TemporaryDirectory() as work:
        prefix = Path(work) / "flamegraph"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "obskit",
                "profile",
                "--format",
                "svg",
                "-o",
                str(prefix),
                "--",
                "examples/report_job.py",
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=120,
            check=True,
        )
        return prefix.with_suffix(".svg").read_text(encoding="utf-8")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.svg").write_text(ansi_to_svg(demo(), "obskit demo"), encoding="utf-8")
    title = "OTEL_TRACES_EXPORTER=console flask --app app run"
    (out / "quickstart.svg").write_text(
        ansi_to_svg(quickstart(), title, QUICKSTART_COLUMNS), encoding="utf-8"
    )
    (out / "flamegraph.svg").write_text(flamegraph(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
