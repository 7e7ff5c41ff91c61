"""``obskit profile``: run a Python program under the sampling profiler, then write its
flame graph (HTML or SVG) and its pprof file and print the top functions.

The program runs in this process, as ``python`` would run it (``runpy``: ``__main__``,
its ``sys.argv``, its directory or the current one first on ``sys.path``), with the
sampler reading every thread's stack ``--hz`` times a second. Whatever way it ends (it
returns, calls ``sys.exit``, raises, or Ctrl-C stops it) the outputs are written; then
its exit code becomes ours (1 after an exception, 130 after Ctrl-C). The frames of this
command and of ``runpy`` under the program are left out of the profile.

Only the parser is built at import (``obskit --help`` stays quick); the profiler, the
flame graph and the pprof encoder are imported when the command runs, before the program
starts (it may change ``sys.path``); protobuf, at the first pprof encoding.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import runpy
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from obskit._terminal import escape_controls

if TYPE_CHECKING:
    from obskit._profiles.window import Window

__all__ = [
    "DEFAULT_HZ",
    "DEFAULT_PREFIX",
    "Target",
    "add_parser",
    "parse_target",
    "run",
    "top_functions",
]

DEFAULT_HZ = 100.0
DEFAULT_PREFIX = "obskit-profile"
_MAX_HZ = 1000.0
_TOP = 5
_USAGE_HINT = "obskit profile [options] -- script.py [args] | -m module [args]"
#: ``python``, ``python3``, ``python3.12``, ``python.exe``: the interpreter, not a script.
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?(\.exe)?")


@dataclass(frozen=True)
class Target:
    """The program to run: a script's path or a module's name, and its arguments."""

    name: str
    args: tuple[str, ...]
    module: bool = False

    def describe(self) -> str:
        """The program as a command line (for the title)."""
        return " ".join(["python", *(["-m"] if self.module else []), self.name, *self.args])


def add_parser(commands: Any) -> None:
    """Add the ``profile`` command to ``commands`` (argparse subparsers)."""
    profile = commands.add_parser(
        "profile",
        help="run a Python program under the sampling profiler; write its flame graph"
        " and pprof file",
        usage=f"{_USAGE_HINT}\n       (options: [--hz N] [-o PREFIX] [--format html|svg])",
        description="Run a Python program (a script, or -m module) in this process with the"
        " sampling profiler on, then write PREFIX.html (or .svg), a flame graph, and"
        " PREFIX.pb.gz, a pprof profile, and print the functions with the most samples."
        " The samples are wall-clock time: a thread that waits is sampled where it waits."
        " The program's exit code becomes the command's (1 when it raises). A leading"
        " 'python' in the target is dropped, so 'obskit profile -- python app.py' works.",
    )
    profile.add_argument(
        "--hz",
        type=_hz,
        default=DEFAULT_HZ,
        metavar="N",
        help=f"samples per second and thread (default {DEFAULT_HZ:g}, at most {_MAX_HZ:g})",
    )
    profile.add_argument(
        "-o",
        "--output",
        default=DEFAULT_PREFIX,
        metavar="PREFIX",
        help=f"write PREFIX.html (or .svg) and PREFIX.pb.gz (default {DEFAULT_PREFIX}, in"
        " the current directory)",
    )
    profile.add_argument(
        "--format",
        choices=("html", "svg"),
        default="html",
        help="the flame graph as an HTML page with zoom and search (default) or a plain SVG",
    )
    profile.add_argument(
        "target",
        nargs=argparse.REMAINDER,
        help="after --: the program, as python takes it (script.py args, or -m module args)",
    )


def _hz(text: str) -> float:
    value = float(text)
    if not 0 < value <= _MAX_HZ:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {_MAX_HZ:g}")
    return value


def parse_target(words: Sequence[str]) -> Target:
    """The program in ``words`` (what follows ``--``): ``script.py args``, ``-m module
    args``, either one after ``python``.

    Raises:
        ValueError: no program, or an interpreter option other than ``-m``.
    """
    words = list(words)
    if words[:1] == ["--"]:
        words = words[1:]
    if words and (words[0] == sys.executable or _PYTHON.fullmatch(os.path.basename(words[0]))):
        words = words[1:]
    if not words:
        raise ValueError(f"no program to run: {_USAGE_HINT}")
    first = words[0]
    if first == "-m":
        if len(words) < 2:
            raise ValueError("-m needs a module name")
        return Target(words[1], tuple(words[2:]), module=True)
    if first.startswith("-m"):  # -mmodule, as python takes it
        return Target(first[2:], tuple(words[1:]), module=True)
    if first.startswith("-"):
        raise ValueError(
            f"{first!r}: only a script or -m module can be profiled (no interpreter options)"
        )
    return Target(first, tuple(words[1:]))


def run(target_words: Sequence[str], hz: float, prefix: str, fmt: str = "html") -> int:
    """Run the program in ``target_words`` under the profiler, write ``prefix.<fmt>`` and
    ``prefix.pb.gz``, print where and the top functions; return the exit code (2 when
    the program cannot be started)."""
    try:
        target = parse_target(target_words)
    except ValueError as error:
        _say(f"obskit profile: {error}")
        return 2
    graph_path = f"{prefix}.{fmt}"
    pprof_path = f"{prefix}.pb.gz"
    folder = os.path.dirname(os.path.abspath(graph_path))
    if not os.path.isdir(folder):
        _say(f"obskit profile: cannot write {graph_path}: no directory {folder}")
        return 2
    # Imported before the program runs: it may change sys.path or sys.modules.
    from obskit._profiles import flamegraph, pprof  # noqa: F401  (pprof: for _write_pprof)
    from obskit._profiles.sampler import Sampler

    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        problem = _prepare(target)
        if problem:
            _say(f"obskit profile: {problem}")
            return 2
        sampler = Sampler(hz)
        code = _execute(target, sampler)
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    window = _program_only(sampler.take())
    title = target.describe()
    failed = False
    text = flamegraph.html(window, title) if fmt == "html" else flamegraph.svg(window, title)
    failed |= not _write(graph_path, text.encode("utf-8"))
    pprof_written = _write_pprof(window, pprof_path)
    failed |= pprof_written is False
    _report(window, hz, graph_path, pprof_path if pprof_written else None)
    return code if code or not failed else 1


def _prepare(target: Target) -> str:
    """Set ``sys.argv`` and ``sys.path`` as ``python`` would for ``target``; return what
    stops it from running ("" when nothing does)."""
    if target.module:
        sys.path[0:1] = [os.getcwd()]
        sys.argv = [target.name, *target.args]  # runpy sets argv[0] to the module's file
        try:
            import importlib.util

            found = importlib.util.find_spec(target.name) is not None
        except Exception as error:  # a parent package that fails to import, a bad name
            return f"cannot find module {target.name!r}: {error}"
        return "" if found else f"no module named {target.name!r}"
    if not os.path.exists(target.name):
        return f"cannot open file {target.name!r}: no such file or directory"
    sys.path[0:1] = [os.path.dirname(os.path.abspath(target.name))]
    sys.argv = [target.name, *target.args]
    return ""


def _execute(target: Target, sampler: Any) -> int:
    """Run the program with the sampler on; return its exit code."""
    _flush()
    sampler.start()
    try:
        try:
            if target.module:
                runpy.run_module(target.name, run_name="__main__", alter_sys=True)
            else:
                # The absolute path, as python gives __file__ and the code's file name.
                runpy.run_path(os.path.abspath(target.name), run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
        except KeyboardInterrupt as error:
            _print_traceback(error)
            code = 130
        except BaseException as error:
            _print_traceback(error)
            code = 1
        if code != 130:
            _join_program_threads()
        return code
    finally:
        sampler.stop()


def _exit_code(code: object) -> int:
    """``sys.exit(code)``'s exit status, as the interpreter turns it into one."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    _flush()
    _say(str(code))
    return 1


def _print_traceback(error: BaseException) -> None:
    """The traceback from the program's own frames on (this module's and runpy's cut)."""
    ours = (_execute.__code__.co_filename, runpy.run_path.__code__.co_filename)
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    _flush()
    traceback.print_exception(type(error), error, tb)


def _join_program_threads() -> None:
    """Wait for the program's non-daemon threads, as the interpreter would after its
    main module ends, so their samples are in the profile (Ctrl-C stops waiting)."""
    try:
        for _ in range(10_000):  # bounded: a thread started while waiting is one more round
            others = [
                thread
                for thread in threading.enumerate()
                if thread is not threading.current_thread()
                and not thread.daemon
                and thread.is_alive()
            ]
            if not others:
                return
            others[0].join()
    except KeyboardInterrupt:
        return


def _program_only(window: Window) -> Window:
    """``window`` without the frames of this command and runpy under the program; a
    sample of this command outside the program (starting, stopping) is dropped."""
    from obskit._profiles.window import Window

    ours = _execute.__code__.co_filename
    runner = runpy.run_path.__code__.co_filename
    kept = Window(window.start_ns, window.end_ns, window.period_ns, overflow=window.overflow)
    for (stack, labels), count in window.counts.items():
        ours_at = next((i for i, frame in enumerate(stack) if frame[1] == ours), None)
        if ours_at is not None:
            cut = ours_at
            while cut > 0 and stack[cut - 1][1] == runner:
                cut -= 1
            if cut == ours_at or cut == 0:  # not in the program: this command's own work
                continue
            stack = stack[:cut]
        key = (stack, labels)
        kept.counts[key] = kept.counts.get(key, 0) + count
    return kept


def top_functions(window: Window, limit: int = _TOP) -> list[tuple[int, str, str, int]]:
    """The functions with the most samples of their own (the innermost frame), as
    ``(samples, function, file, line)``, most first; a function's line is its busiest."""
    own: dict[tuple[str, str], dict[int, int]] = {}
    for (stack, _labels), count in window.counts.items():
        if stack and count > 0:
            function, file, line = stack[0]
            lines = own.setdefault((function, file), {})
            lines[line] = lines.get(line, 0) + count
    rows = []
    for (function, file), lines in own.items():
        line = min(lines.items(), key=lambda item: (-item[1], item[0]))[0]
        rows.append((sum(lines.values()), function, file, line))
    rows.sort(key=lambda row: (-row[0], row[1], row[2]))
    return rows[:limit]


def _write(path: str, data: bytes) -> bool:
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        _say(f"obskit profile: cannot write {path}: {error}")
        return False
    return True


def _write_pprof(window: Window, path: str) -> bool | None:
    """Write the pprof file; ``None`` when this install cannot encode pprof."""
    try:
        from obskit._profiles.pprof import encode

        data = encode(window)
    except ImportError as error:
        _say(f"obskit profile: no pprof file ({error}); pip install 'obskit-sdk[profiles]' adds it")
        return None
    return _write(path, data)


def _report(window: Window, hz: float, graph_path: str, pprof_path: str | None) -> None:
    seconds = max(0, window.end_ns - window.start_ns) / 1e9
    total = window.samples
    lines = [
        f"obskit profile: {total:,} samples at {hz:g} Hz over {seconds:.2f} s",
        f"  flame graph  {escape_controls(graph_path)}",
    ]
    if pprof_path is not None:
        lines.append(f"  pprof        {escape_controls(pprof_path)}")
    rows = top_functions(window)
    if rows:
        lines.append("  top functions (samples of their own):")
        for count, function, file, line in rows:
            where = f"  ({escape_controls(file)}:{line})" if file else ""
            lines.append(f"    {100.0 * count / total:5.1f}%  {escape_controls(function)}{where}")
    _flush()
    _say("\n".join(lines))


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the program closed or replaced it
            stream.flush()


def _say(text: str) -> None:
    """A line for the person running the command, on standard error (the program's
    standard output stays its own)."""
    with contextlib.suppress(Exception):  # the program closed standard error
        print(text, file=sys.stderr, flush=True)
