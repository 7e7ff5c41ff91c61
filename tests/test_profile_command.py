"""`obskit profile`: a real program run under the profiler, as a user runs the command."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from obskit._profiles.pprof import decode
from obskit._tools.profile_cmd import Target, parse_target
from obskit.cli import main
from tests.servers import ROOT, clean_env

BUSY = """\
import json, sys, time

def busy_loop(seconds):
    end = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins

def main():
    print(json.dumps({"argv": sys.argv, "name": __name__}), flush=True)
    busy_loop(SECONDS)
    OUTCOME

if __name__ == "__main__":
    main()
"""


def _program(folder: Path, name: str, outcome: str = "pass", seconds: float = 1.0) -> Path:
    path = folder / name
    path.write_text(BUSY.replace("SECONDS", str(seconds)).replace("OUTCOME", outcome))
    return path


def _profile(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m obskit profile ARGS`` in ``cwd`` (obskit found through PYTHONPATH)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "obskit", "profile", *args],
        cwd=cwd,
        env=clean_env(PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=10)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _pprof_functions(path: Path) -> list[tuple[str, str]]:
    """The (function, file) pairs of a pprof file, decoded by obskit's pprof reader."""
    profile = decode(path.read_bytes())
    strings = list(profile.string_table)
    return [(strings[f.name], strings[f.filename]) for f in profile.function]


def _top(stderr: str) -> list[str]:
    """The function names of the printed top list, most first."""
    return re.findall(r"^\s+\d+\.\d%  (\S+)", stderr, re.M)


@pytest.mark.slow
def test_script_runs_as_main_its_exit_code_passes_through_and_outputs_name_busy_loop(
    tmp_path: Path,
) -> None:
    """A script that burns CPU in busy_loop and calls sys.exit(3): it runs as __main__
    with its own argv, the command exits 3, and obskit-profile.html and .pb.gz in the
    current directory, and the printed top, all name busy_loop (and none of the
    command's own or runpy's frames)."""
    script = _program(tmp_path, "burn.py", outcome="sys.exit(3)")
    result = _profile(tmp_path, "--", "burn.py", "a", "--b")
    assert result.returncode == 3, result.stderr
    seen = json.loads(result.stdout.splitlines()[0])
    assert seen == {"argv": [str(script), "a", "--b"], "name": "__main__"}
    page = (tmp_path / "obskit-profile.html").read_text(encoding="utf-8")
    assert "busy_loop" in page
    assert "obskit-profile.html" in result.stderr
    assert "obskit-profile.pb.gz" in result.stderr
    assert _top(result.stderr)[0] == "busy_loop", result.stderr
    functions = _pprof_functions(tmp_path / "obskit-profile.pb.gz")
    assert ("busy_loop", str(script)) in functions
    files = {file for _, file in functions}
    assert not [file for file in files if "runpy" in file or file.endswith("profile_cmd.py")]


@pytest.mark.slow
def test_module_form_after_python_writes_an_svg_at_the_prefix(tmp_path: Path) -> None:
    """``-- python -m module args`` runs the module from the current directory as
    __main__; ``--format svg -o PREFIX --hz 50`` writes PREFIX.svg (valid XML naming
    busy_loop) and PREFIX.pb.gz with a 20 ms period; exit 0."""
    _program(tmp_path, "burner.py")
    prefix = tmp_path / "out" / "run1"
    prefix.parent.mkdir()
    options = ["--hz", "50", "--format", "svg", "-o", str(prefix)]
    result = _profile(tmp_path, *options, "--", "python", "-m", "burner", "x")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[0])
    assert seen == {"argv": [str(tmp_path / "burner.py"), "x"], "name": "__main__"}
    image = prefix.with_suffix(".svg").read_text(encoding="utf-8")
    ET.fromstring(image.encode("utf-8"))
    assert "busy_loop" in image
    assert _top(result.stderr)[0] == "busy_loop", result.stderr
    assert decode((tmp_path / "out" / "run1.pb.gz").read_bytes()).period == 20_000_000
    assert not (tmp_path / "out" / "run1.html").exists()


@pytest.mark.slow
def test_a_program_that_raises_exits_1_with_its_traceback_and_outputs_written(
    tmp_path: Path,
) -> None:
    """A program whose main raises: its traceback (from its own frames on) is printed,
    the flame graph and pprof file are still written, and the command exits 1."""
    _program(tmp_path, "crash.py", outcome="raise ValueError('boom')", seconds=0.3)
    result = _profile(tmp_path, "-o", "crashed", "--", "crash.py")
    assert result.returncode == 1, result.stderr
    assert "ValueError: boom" in result.stderr
    traceback = result.stderr[result.stderr.index("Traceback") :]
    assert 'crash.py", line' in traceback.splitlines()[1]  # the program's frame first
    assert "runpy" not in traceback
    assert "profile_cmd" not in traceback
    assert "busy_loop" in (tmp_path / "crashed.html").read_text(encoding="utf-8")
    assert ("busy_loop", str(tmp_path / "crash.py")) in _pprof_functions(tmp_path / "crashed.pb.gz")


@pytest.mark.slow
def test_threads_the_program_leaves_running_are_waited_for_and_profiled(tmp_path: Path) -> None:
    """A program whose main module ends while its non-daemon thread still burns CPU:
    the command waits for the thread, as python would, and its samples are in the
    profile under the thread's frames."""
    script = tmp_path / "threads.py"
    script.write_text(
        BUSY.replace("SECONDS", "0")
        .replace("OUTCOME", "threading.Thread(target=busy_loop, args=(1.0,), name='w').start()")
        .replace("import json", "import threading, json")
    )
    result = _profile(tmp_path, "--", str(script))
    assert result.returncode == 0, result.stderr
    assert _top(result.stderr)[0] == "busy_loop", result.stderr
    page = (tmp_path / "obskit-profile.html").read_text(encoding="utf-8")
    assert 'data-n="Thread.run"' in page


@pytest.mark.slow
def test_ctrl_c_stops_the_program_and_the_outputs_are_written(tmp_path: Path) -> None:
    """SIGINT while the program runs: outputs written, busy_loop in them, exit 130."""
    _program(
        tmp_path, "serve.py", outcome="print('ready', flush=True); time.sleep(60)", seconds=0.5
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "obskit", "profile", "--", "serve.py"],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            for _ in range(100):  # bounded: each round reads something or fails
                if b"ready\n" in seen:
                    break
                assert selector.select(timeout=30), f"the program did not get ready: {seen!r}"
                chunk = os.read(process.stdout.fileno(), 4096)
                assert chunk, f"the program ended before it was ready: {seen!r}"
                seen += chunk
        process.send_signal(signal.SIGINT)
        _, raw_err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(timeout=10)
    err = raw_err.decode("utf-8", "replace")
    assert process.returncode == 130, err
    assert "KeyboardInterrupt" in err
    assert "busy_loop" in (tmp_path / "obskit-profile.html").read_text(encoding="utf-8")
    assert ("busy_loop", str(tmp_path / "serve.py")) in _pprof_functions(
        tmp_path / "obskit-profile.pb.gz"
    )


def test_a_missing_script_or_module_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """A script that does not exist, or a module that cannot be found: a message, exit
    2, no output file."""
    missing = _profile(tmp_path, "--", "nope.py")
    assert missing.returncode == 2
    assert "cannot open file 'nope.py'" in missing.stderr
    no_module = _profile(tmp_path, "--", "-m", "no_such_module_here")
    assert no_module.returncode == 2
    assert "no module named 'no_such_module_here'" in no_module.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_does_not_exist_is_refused_before_the_program_runs(
    tmp_path: Path,
) -> None:
    """``-o`` in a folder that does not exist: exit 2 before running anything."""
    script = tmp_path / "say.py"
    script.write_text("print('ran')\n")
    result = _profile(tmp_path, "-o", str(tmp_path / "no" / "such"), "--", str(script))
    assert result.returncode == 2
    assert "no directory" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("words", "target"),
    [
        (["--", "app.py", "-v", "--", "x"], Target("app.py", ("-v", "--", "x"))),
        (["app.py"], Target("app.py", ())),
        (["--", "-m", "pkg.mod", "-m", "y"], Target("pkg.mod", ("-m", "y"), module=True)),
        (["--", "python", "app.py", "1"], Target("app.py", ("1",))),
        (["--", "python3", "-m", "http.server"], Target("http.server", (), module=True)),
        (["--", "/usr/bin/python3.12", "-mpkg", "a"], Target("pkg", ("a",), module=True)),
        (["--", sys.executable, "app.py"], Target("app.py", ())),
    ],
)
def test_target_forms(words: list[str], target: Target) -> None:
    """A script or ``-m module`` with its arguments, after ``--`` or not, with or without
    a leading python, python3, pythonX.Y or this interpreter."""
    assert parse_target(words) == target


@pytest.mark.parametrize(
    ("words", "message"),
    [([], "no program to run"), (["--", "python"], "no program"), (["-c", "x"], "'-c'")],
)
def test_target_mistakes_are_named(words: list[str], message: str) -> None:
    """No program, or an interpreter option other than -m, is refused with a reason."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_target(words)


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """A rate outside (0, 1000] or an unknown format exits 2 with argparse's usage; no
    program and a bad interpreter option return 2 with the reason."""
    for argv in (["--hz", "0"], ["--hz", "5000"], ["--format", "png"]):
        with pytest.raises(SystemExit) as exited:
            main(["profile", *argv, "--", "app.py"])
        assert exited.value.code == 2
    assert "at most 1000" in capsys.readouterr().err
    assert main(["profile"]) == 2
    assert main(["profile", "--", "-X", "dev", "app.py"]) == 2
    err = capsys.readouterr().err
    assert "no program to run" in err
    assert "'-X': only a script or -m module" in err


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`obskit --help` lists profile; its own help shows the target forms, in plain text."""
    for argv in (["--help"], ["profile", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert re.search(r"^\s+profile\s+run a Python program", out, re.M)
    assert "-- script.py [args] | -m module [args]" in out
    assert "``" not in out
