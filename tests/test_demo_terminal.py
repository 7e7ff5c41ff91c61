"""`obskit demo` as people run it: on an 80-column terminal, piped into `head`, with
`NO_COLOR`, and with `--serve` on a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.servers import ROOT, clean_env
from tests.terminal import run_obskit, run_on_terminal

_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_EXPOSITION = re.compile(r"^[a-z_]+\{.*\} \S+ # \{.*\} \S+")


def _human_lines(out: str) -> tuple[list[str], list[str]]:
    """The output's lines for people, and its raw machine lines (those under a
    "Raw, ..." label, up to the next blank line)."""
    human, raw, in_raw = [], [], False
    for line in _ESCAPE.sub("", out).split("\n"):
        if in_raw and not line.strip():
            in_raw = False
        if in_raw:
            raw.append(line)
        else:
            human.append(line)
        if line.lstrip().startswith("Raw, "):
            in_raw = True
    return human, raw


def _check_width(out: str, columns: int) -> None:
    human, raw = _human_lines(out)
    too_wide = [line for line in human if len(line) > columns]
    assert not too_wide, too_wide
    assert raw, "no raw lines were shown"
    for line in raw:  # the only lines allowed to be wider: JSON and OpenMetrics
        assert (line.startswith("{") and json.loads(line)) or _EXPOSITION.match(line), line


@pytest.mark.slow
def test_demo_fits_80_columns_except_its_labelled_raw_lines() -> None:
    """With COLUMNS=80 every line is at most 80 characters wide, except the raw JSON
    and OpenMetrics lines printed under a "Raw, ..." label."""
    result = run_obskit(["demo"], COLUMNS="80")
    assert result.returncode == 0, result.stderr
    _check_width(result.stdout, 80)
    assert "1. Its trace" in result.stdout
    assert "4. The failing request, GET /fail" in result.stdout
    assert "obskit demo --serve" in result.stdout  # the next steps
    assert "pip install 'obskit-sdk[flask]'" in result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith("obskit demo: a small shop app on http://127.0.0.1:")
    assert "not installed" not in first


@pytest.mark.slow
def test_demo_piped_into_a_reader_that_stops_exits_quietly() -> None:
    """`obskit demo | head -3`: the demo ends with exit code 0 and no traceback when
    its reader goes away after three lines."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "obskit", "demo"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert demo.stdout is not None
        assert demo.stderr is not None
        lines = [demo.stdout.readline() for _ in range(3)]
        demo.stdout.close()  # what head does after its third line
        code = demo.wait(timeout=60)
        errors = demo.stderr.read().decode()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)
        for stream in (demo.stdout, demo.stderr):
            if stream is not None:
                stream.close()
    assert lines[0].startswith(b"obskit demo:")
    assert code == 0
    assert "Traceback" not in errors
    assert "BrokenPipeError" not in errors


@pytest.mark.slow
def test_demo_on_a_terminal_with_no_color_writes_no_escape_codes() -> None:
    """On a terminal with NO_COLOR=1, the demo writes no escape sequence at all."""
    code, out = run_on_terminal(["obskit", "demo"], env={"NO_COLOR": "1"})
    assert code == 0, out
    assert "1. Its trace" in out
    assert "\x1b" not in out


@pytest.mark.slow
def test_demo_on_a_terminal_highlights_the_trace_id_and_fits_its_width() -> None:
    """On a 100-column terminal: colours, the checkout's trace id highlighted wherever
    it appears, and every line for people within 100 columns."""
    code, out = run_on_terminal(["obskit", "demo"], columns=100)
    assert code == 0, out
    (trace_id,) = re.findall(r"has trace\s+id \x1b\[1;33m([0-9a-f]{32})\x1b\[0m", out)
    assert out.count(f"\x1b[1;33m{trace_id}\x1b[0m") >= 3  # intro, waterfall, raw lines
    _check_width(out, 100)


@pytest.mark.slow
def test_demo_serve_on_a_terminal_prints_each_new_requests_waterfall() -> None:
    """`obskit demo --serve` on a terminal: a request sent after start-up is printed as
    its waterfall, with its log lines, and Ctrl-C ends the demo."""

    def send(output: str) -> None:
        (base,) = re.findall(r"Serving (http://127\.0\.0\.1:\d+) until Ctrl-C", output)
        request = urllib.request.Request(f"{base}/orders/7/pay", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()

    code, out = run_on_terminal(
        ["obskit", "demo", "--serve"],
        env={"NO_COLOR": "1"},
        until=lambda seen: "Each request's waterfall" in seen or "POST /orders/7/pay 200" in seen,
        then=send,
    )
    assert code == 0, out
    after = out.split("Each request's waterfall and log lines appear here.", 1)[1]
    # the request, two traced calls, a query, the call to the payments route, its
    # server span and its insert: one trace, shown once
    assert len(re.findall(r"^trace [0-9a-f]{32}  \S+ ms  7 spans$", after, re.M)) == 1, after
    assert "\nPOST /orders/<int:order_id>/pay " in after
    assert "order loaded  order_id=7" in after
    assert "POST /orders/7/pay 200" in after
    assert "Traceback" not in out
