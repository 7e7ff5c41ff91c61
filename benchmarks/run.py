"""Run every benchmark, each in its own process, and write one summary.

Each script interleaves its cases round by round and compares them with the
hand-written floor measured in the same run. This runner collects their JSON
results into ``benchmarks/results/summary.json`` and ``summary.md`` and prints the
Markdown. Scripts whose optional peers or tools are missing print a note and skip
those cases.

Run: ``python benchmarks/run.py`` (``--quick`` for fewer rounds). The Flask and
Django peers live in the ``bench`` extra; install it in a separate virtualenv
(``pip install -e '.[bench]' gunicorn``; the contrib instrumentations pin an older
OpenTelemetry, and pip gave up resolving ``[bench,dev]`` together on 2026-12-06) and
run this script with that interpreter to include them. Every script starts its child
processes with ``sys.executable`` as it is, so they run in the same virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SCRIPTS = {
    "traced": (["15", "2000"], ["5", "1000"]),
    "logs": (["11", "5000"], ["5", "2000"]),
    "flask": (["9", "500"], ["3", "200"]),
    "django": (["9", "500"], ["3", "200"]),
    "db": (["11", "2000"], ["3", "500"]),
    "http_clients": (["21", "300"], ["5", "100"]),
    "dumps": (["9", "1000"], ["3", "300"]),
    "import": (["11"], ["5"]),
    "e2e": (["8", "4"], ["2", "3"]),
    "instructions": (["1000"], ["300"]),
    "collector_down": (["1"], ["1"]),
    "export_stall": (["8", "10"], ["3", "5"]),
}


def main() -> None:
    quick = "--quick" in sys.argv
    sections = []
    summary = {}
    # Measure this checkout's obskit, whatever an editable install points at.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for name, (full, fast) in SCRIPTS.items():
        args = fast if quick else full
        print(f"--- bench_{name}.py {' '.join(args)}", flush=True)
        result = subprocess.run(
            [sys.executable, str(HERE / f"bench_{name}.py"), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        print(result.stdout, end="")
        if result.returncode != 0:
            print(result.stderr[-2000:])
            sections.append(f"## {name}\n\nfailed: exit {result.returncode}\n")
            continue
        data_file = RESULTS / f"{name}.json"
        summary[name] = json.loads(data_file.read_text()) if data_file.exists() else None
        notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
        sections.append(
            f"## {name}\n\n```\n{result.stdout.strip()}\n```\n"
            + "".join(f"\n{note}" for note in notes)
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    markdown = "# Benchmark results\n\n" + "\n".join(sections)
    (RESULTS / "summary.md").write_text(markdown)
    print(f"\nwrote {RESULTS / 'summary.json'} and {RESULTS / 'summary.md'}")


if __name__ == "__main__":
    main()
