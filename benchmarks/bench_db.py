"""Cost per database statement: a sqlite3 query and a SQLAlchemy query, obskit against
OpenTelemetry's contrib instrumentations.

Cases, all on one sqlite file, each statement inside one sampled span (so every
instrumented case makes one CLIENT span per statement, checked before measuring), the
rows fetched:

- sqlite3, ``cursor.execute`` of a primary-key SELECT: the plain connection;
  ``SQLite3Instrumentor.instrument_connection`` (contrib's dbapi proxy; contrib does not
  trace ``Connection.execute``, hence the cursor); the connection obskit's
  ``sqlite3.connect`` returns (span + histogram with exemplar).
- SQLAlchemy, a Core select by primary key on an open ``Connection``: a plain engine;
  ``SQLAlchemyInstrumentor().instrument(engine=...)`` (contrib's engine listeners;
  ``skip_dep_check``, as contrib 0.66b1 declares ``sqlalchemy < 2.1``); obskit's
  listeners, its engine's sqlite3 connection traced too (obskit's driver layer stands
  aside, and its cost is in the figure). ``init()`` attaches obskit's listeners to the
  ``Engine`` class; here they are moved to obskit's case's engine, so that the other
  cases run without them (the same listeners, the same dispatch).

Two measures, each giving obskit's added cost over the plain case against contrib's:

- time (default): the cases interleaved round by round in one process, medians;
- ``--instructions``: machine instructions per statement counted by valgrind
  (``cachegrind``, Debian package ``valgrind``), each case in a child process run twice
  (a warm-up, then the warm-up and ``statements`` more; the difference divided by
  ``statements``): the same to a fraction of a percent run after run, where timings on
  a shared VM drift by tens of percent. Instructions of every thread count (the batch
  span processor's too).

Spans of every case come from obskit's provider (the global one the contrib
instrumentations use) and go through a ``BatchSpanProcessor`` to an exporter that drops
them (``_floor.discard_spans``). The contrib packages pin an OpenTelemetry of their own:
run this script in a separate virtualenv, with the contrib release made for the SDK
installed there and a constraints file pinning that SDK, e.g.::

    python -m venv /tmp/venv-bench-db
    printf 'opentelemetry-api==1.45.1\\nopentelemetry-sdk==1.45.1\\n' > /tmp/constraints.txt
    /tmp/venv-bench-db/bin/pip install -c /tmp/constraints.txt -e . 'sqlalchemy[asyncio]' \\
        opentelemetry-instrumentation-sqlite3==0.66b1 \\
        opentelemetry-instrumentation-sqlalchemy==0.66b1

Without them the contrib cases are skipped with a note. Run:
``python benchmarks/bench_db.py [rounds] [statements]`` or
``python benchmarks/bench_db.py --instructions [statements]``; prints a table and
writes ``benchmarks/results/db.json`` (or ``db_instructions.json``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind

sys.path.insert(0, str(Path(__file__).parent))
from _floor import discard_spans
from _rounds import Case, interleaved, timed

RESULTS = Path(__file__).parent / "results"
QUERY = "SELECT id, sku, qty FROM items WHERE id = ?"
WARM_UP = 300
plain_connect = sqlite3.connect  # taken before obskit wraps it
#: valgrind counting instructions only: no cache simulation, no output file.
CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")


def make_database(path: Path) -> None:
    connection = plain_connect(path)
    connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT, qty INTEGER)")
    connection.executemany(
        "INSERT INTO items (sku, qty) VALUES (?, ?)", [(f"sku-{n}", n) for n in range(100)]
    )
    connection.commit()
    connection.close()


def sqlite_query(connection: Any) -> Callable[[], None]:
    cursor = connection.cursor()

    def query() -> None:
        cursor.execute(QUERY, (7,))
        cursor.fetchall()

    return query


def sqlalchemy_query(engine: Any) -> Callable[[], None]:
    from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select

    items = Table(
        "items", MetaData(), Column("id", Integer, primary_key=True), Column("sku", String)
    )
    statement = select(items).where(items.c.id == bindparam("id"))
    connection = engine.connect()

    def query() -> None:
        connection.execute(statement, {"id": 7}).fetchall()

    return query


class ClientSpans(SpanProcessor):
    """Counts the CLIENT spans that end while :attr:`counting`: each case's spans per
    statement, checked before measuring (one span each, none for the plain ones)."""

    def __init__(self) -> None:
        self.counting = False
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        if self.counting and span.kind is SpanKind.CLIENT:
            self.ended += 1


class Setup:
    """obskit initialised and every case's query ready, by group then case name."""

    def __init__(self, path: Path) -> None:
        self.notes: list[str] = []
        try:
            import sqlalchemy
        except ImportError:
            sqlalchemy = None
            self.notes.append("sqlalchemy not installed: its cases skipped")

        import obskit

        self.handle = obskit.init(service_name="bench", traces_exporter="none", log_level="error")
        assert self.handle.tracer_provider is not None
        discard_spans(self.handle.tracer_provider)
        self.counter = ClientSpans()
        self.handle.tracer_provider.add_span_processor(self.counter)
        sqlite_cases = {"plain connection": sqlite_query(plain_connect(path))}
        self.groups: dict[str, dict[str, Callable[[], None]]] = {"sqlite3": sqlite_cases}
        try:
            from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
        except ImportError:
            self.notes.append("opentelemetry-instrumentation-sqlite3 not installed: case skipped")
        else:
            contrib = SQLite3Instrumentor.instrument_connection(plain_connect(path))
            sqlite_cases["contrib sqlite3/dbapi"] = sqlite_query(contrib)
        traced = sqlite3.connect(path)  # obskit's traced connection
        assert type(traced).__name__ == "TracedConnection"
        sqlite_cases["obskit"] = sqlite_query(traced)
        if sqlalchemy is not None:
            self.groups["SQLAlchemy"] = self._sqlalchemy_cases(sqlalchemy, path)

    def _sqlalchemy_cases(self, sqlalchemy: Any, path: Path) -> dict[str, Callable[[], None]]:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        from obskit.integrations.databases import sqlalchemy as obskit_sqlalchemy

        listeners = [
            ("before_cursor_execute", obskit_sqlalchemy._before, {"retval": True}),
            ("after_cursor_execute", obskit_sqlalchemy._after, {}),
            ("handle_error", obskit_sqlalchemy._error, {}),
        ]
        for name, listener, _ in listeners:  # attached by init() to every engine: here,
            event.remove(Engine, name, listener)  # to obskit's case's engine only

        def engine(traced_driver: bool) -> Any:
            if traced_driver:
                return sqlalchemy.create_engine(f"sqlite:///{path}")
            return sqlalchemy.create_engine("sqlite://", creator=lambda: plain_connect(path))

        cases = {"plain engine": sqlalchemy_query(engine(False))}
        obskit_engine = engine(True)
        for name, listener, options in listeners:
            event.listen(obskit_engine, name, listener, **options)
        obskit_case = sqlalchemy_query(obskit_engine)
        try:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        except ImportError:
            self.notes.append("opentelemetry-instrumentation-sqlalchemy not installed: skipped")
        else:
            # Last: instrument() also wraps create_engine and Engine.connect for every
            # engine made after it, which the other cases must not get.
            contrib_engine = engine(False)
            SQLAlchemyInstrumentor().instrument(engine=contrib_engine, skip_dep_check=True)
            cases["contrib sqlalchemy"] = sqlalchemy_query(contrib_engine)
        cases["obskit"] = obskit_case
        return cases

    def spans_per_statement(self, query: Callable[[], None], statements: int = 20) -> float:
        self.counter.ended, self.counter.counting = 0, True
        try:
            for _ in range(statements):
                query()
        finally:
            self.counter.counting = False
        return self.counter.ended / statements


def timed_rounds(setup: Setup, rounds: int, statements: int) -> dict[str, dict[str, Any]]:
    """Seconds per statement of every case, interleaved round by round: by case, the
    median, min and max over the rounds and the spans per statement."""
    cases: dict[str, Case] = {}
    spans: dict[str, float] = {}
    tracer = setup.handle.tracer
    assert tracer is not None
    with tracer.start_as_current_span("request"):
        for group, named in setup.groups.items():
            for name, query in named.items():
                cases[f"{group}: {name}"] = timed(query)
                spans[f"{group}: {name}"] = setup.spans_per_statement(query)
        samples = interleaved(cases, rounds, statements)
    return {
        case: {
            "spans_per_statement": spans[case],
            "median_us": statistics.median(values) * 1e6,
            "min_us": min(values) * 1e6,
            "max_us": max(values) * 1e6,
        }
        for case, values in samples.items()
    }


def child(case: str, statements: int, path: Path) -> None:
    """In the process valgrind runs: set every case up on the database ``path``, then
    run ``case``'s query WARM_UP + ``statements`` times inside one span."""
    setup = Setup(path)
    group, name = case.split(": ", 1)
    query = setup.groups[group][name]
    tracer = setup.handle.tracer
    assert tracer is not None
    with tracer.start_as_current_span("request"):
        if setup.spans_per_statement(query, 1) != (0.0 if "plain" in name else 1.0):
            raise RuntimeError(f"{case}: not one CLIENT span per statement")
        for _ in range(WARM_UP + statements):
            query()
    os._exit(0)  # no interpreter teardown: the same in both runs, and quicker


def instructions(case: str, statements: int, path: Path) -> int:
    """Instructions of a child that runs ``case`` ``statements`` times after its warm-up."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OBSKIT_METRICS_PORT": "0"}
    report = subprocess.run(
        [*CACHEGRIND, sys.executable, __file__, "--child", case, str(statements), str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=1800,
    ).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind for {case!r}:\n{report[-2000:]}")
    return int(found.group(1).replace(",", ""))


def counted(setup: Setup, statements: int, path: Path) -> dict[str, dict[str, Any]]:
    """Instructions per statement of every case, from two valgrind runs each."""
    found = {}
    for group, named in setup.groups.items():
        for name in named:
            case = f"{group}: {name}"
            total = instructions(case, statements, path)
            per_statement = (total - instructions(case, 0, path)) / statements
            found[case] = {"instructions": round(per_statement)}
    return found


def report(
    setup: Setup, measured: dict[str, dict[str, Any]], key: str, unit: str, title: str
) -> dict[str, Any]:
    """Print the table (added cost over each group's plain case, obskit's against
    contrib's) and return it as JSON."""
    rows = []
    ratios: dict[str, float | None] = {}
    print(title)
    print(f"{'case':<40} {unit:>12} {'added':>10}")
    for group, named in setup.groups.items():
        names = list(named)
        bare = measured[f"{group}: {names[0]}"][key]
        added = {name: measured[f"{group}: {name}"][key] - bare for name in names}
        for name in names:
            row = {"case": f"{group}: {name}", **measured[f"{group}: {name}"], "added": added[name]}
            rows.append(row)
            print(f"{row['case']:<40} {row[key]:>12.1f} {added[name]:>10.1f}")
        peer = next((name for name in names if name.startswith("contrib")), None)
        ratio = None
        if peer is not None and added[peer] > 0:
            ratio = round(added["obskit"] / added[peer], 3)
            print(f"{group}: obskit added / {peer} added: {ratio:.2f}x (target <= 0.5x)")
        ratios[group] = ratio
    for note in setup.notes:
        print(f"note: {note}")
    return {"measure": key, "rows": rows, "notes": setup.notes, "added_ratio_vs_contrib": ratios}


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--child"]:
        child(args[1], int(args[2]), Path(args[3]))
        return
    path = Path(tempfile.mkdtemp(prefix="obskit-bench-db-")) / "bench.sqlite3"
    make_database(path)
    setup = Setup(path)
    RESULTS.mkdir(exist_ok=True)
    if args[:1] == ["--instructions"]:
        statements = int(args[1]) if len(args) > 1 else 1000
        result = report(
            setup,
            counted(setup, statements, path),
            "instructions",
            "instructions",
            f"instructions per statement (valgrind; {statements} statements after warm-up)",
        )
        (RESULTS / "db_instructions.json").write_text(json.dumps(result, indent=2))
        return
    rounds = int(args[0]) if args else 11
    statements = int(args[1]) if len(args) > 1 else 2000
    measured = timed_rounds(setup, rounds, statements)
    for case, row in measured.items():
        if row["spans_per_statement"] != (0.0 if "plain" in case else 1.0):
            raise RuntimeError(f"{case}: {row['spans_per_statement']} CLIENT spans per statement")
    title = f"per statement, {rounds} interleaved rounds x {statements} statements (medians)"
    result = report(setup, measured, "median_us", "median us", title)
    (RESULTS / "db.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
