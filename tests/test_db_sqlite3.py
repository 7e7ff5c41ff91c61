"""sqlite3 against a real database file: every execute/executemany/executescript, on a
connection or a cursor, is one CLIENT span inside a trace and one observation of the
duration histogram; the connections and cursors stay real sqlite3 objects."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import obskit
from obskit.integrations.databases.sqlite3 import TracedConnection, TracedCursor
from obskit.testing import Capture, capture
from tests.db_checks import (
    CANARY,
    attributes,
    calls,
    client_spans,
    everything,
    exemplar_trace_ids,
    is_child_of,
)
from tests.receivers import OtlpHttpReceiver
from tests.servers import run_python


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite3"
    setup = sqlite3.connect(path)  # before init(): a plain connection
    setup.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, qty INTEGER)")
    setup.execute("INSERT INTO orders (sku, qty) VALUES ('first', 1)")
    setup.commit()
    setup.close()
    return path


@pytest.fixture
def connect() -> Iterator[Callable[..., Any]]:
    """sqlite3.connect, the connections it opens closed after the test."""
    opened: list[sqlite3.Connection] = []

    def open_one(*args: Any, **kwargs: Any) -> Any:
        connection = sqlite3.connect(*args, **kwargs)
        opened.append(connection)
        return connection

    yield open_one
    for connection in opened:
        connection.close()


@pytest.fixture
def telemetry(database: Path) -> Iterator[Capture]:
    """obskit initialised (after the database file is made) and what it records."""
    with capture() as recorded:
        yield recorded


def test_cursor_execute_is_a_client_span_with_the_conventions_attributes(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """cursor.execute inside a span: one CLIENT child span "SELECT orders" with
    db.system.name, db.namespace (the file), db.operation.name, db.collection.name and
    the literal-free db.query.text; the rows are what sqlite3 returns."""
    connection = connect(database)
    with obskit.span("handler"):
        cursor = connection.cursor()
        cursor.execute("SELECT sku, qty FROM orders WHERE qty > 0 AND sku = ?", ("first",))
        rows = cursor.fetchall()
    assert rows == [("first", 1)]
    (span,) = client_spans(telemetry)
    assert span.name == "SELECT orders"
    assert is_child_of(span, telemetry.span("handler"))
    assert attributes(span) == {
        "db.system.name": "sqlite",
        "db.namespace": str(database),
        "db.operation.name": "SELECT",
        "db.collection.name": "orders",
        "db.query.text": "SELECT sku, qty FROM orders WHERE qty > ? AND sku = ?",
    }


def test_every_execute_method_of_connection_and_cursor_is_recorded(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """Connection.execute/executemany/executescript and the same on a cursor: one span
    each; a script of several statements is one BATCH span with its size."""
    connection = connect(database)
    with obskit.span("handler"):
        connection.execute("INSERT INTO orders (sku, qty) VALUES (?, ?)", ("a", 2))
        connection.executemany("INSERT INTO orders (sku, qty) VALUES (?, ?)", [("b", 1), ("c", 1)])
        connection.executescript("UPDATE orders SET qty = 3; DELETE FROM orders WHERE qty > 9;")
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM orders")
        assert cursor.fetchone() == (4,)
        cursor.executemany("UPDATE orders SET qty = ? WHERE sku = ?", [(5, "a"), (6, "b")])
        cursor.executescript("CREATE TABLE notes (body TEXT)")
    names = [span.name for span in client_spans(telemetry)]
    assert names == [
        "INSERT orders",
        "INSERT orders",
        "BATCH orders",
        "SELECT orders",
        "UPDATE orders",
        "CREATE notes",
    ]
    batch = attributes(client_spans(telemetry)[2])
    assert batch["db.operation.batch.size"] == 2
    assert batch["db.query.text"] == "UPDATE orders SET qty = ?; DELETE FROM orders WHERE qty > ?;"
    assert calls(telemetry, "sqlite", "INSERT") == 2
    assert calls(telemetry, "sqlite", "BATCH") == 1


def test_the_histogram_has_the_spans_trace_id_as_exemplar(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """The observation made inside a sampled span carries that span's trace id."""
    connection = connect(database)
    with obskit.span("handler"):
        connection.execute("SELECT qty FROM orders").fetchall()
    (span,) = client_spans(telemetry)
    assert calls(telemetry, "sqlite", "SELECT") == 1
    assert exemplar_trace_ids(telemetry, "sqlite", "SELECT") == {telemetry.trace_id(span)}


def test_outside_a_trace_no_span_but_the_histogram_counts(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """A query with no current span makes no span (no stray root traces) and is still
    timed."""
    connection = connect(database)
    connection.execute("SELECT qty FROM orders").fetchall()
    assert client_spans(telemetry) == []
    assert calls(telemetry, "sqlite", "SELECT") == 1
    assert exemplar_trace_ids(telemetry, "sqlite", "SELECT") == set()


def test_literals_never_reach_spans_logs_or_metrics(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """A canary written as a literal (string, number, in a script) or passed as a
    parameter, and in the error sqlite3 raises for it, reaches no span, log or metric."""
    connection = connect(database)
    with obskit.span("handler"):
        connection.execute(f"INSERT INTO orders (sku, qty) VALUES ('{CANARY}', 918273645546)")
        connection.execute("SELECT * FROM orders WHERE sku = ?", (CANARY,))
        connection.executescript(f"UPDATE orders SET sku = '{CANARY}x' WHERE qty = 918273645546;")
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(f"INSERT INTO orders (sku, qty) VALUES ('{CANARY}x', 1)")
        obskit.get_logger("shop").info("done")
    assert len(client_spans(telemetry)) == 4
    text = everything(telemetry)
    assert CANARY not in text
    assert "918273645546" not in text


def test_user_errors_are_raised_unchanged_and_marked_on_the_span(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """An IntegrityError or OperationalError reaches the caller as sqlite3 raised it
    (the same class and message); the span has error.type and an ERROR status that
    quotes no message."""
    connection = connect(database)
    with obskit.span("handler"):
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed"):
            connection.execute("INSERT INTO orders (sku, qty) VALUES ('first', 2)")
        with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
            connection.cursor().execute("SELECT * FROM missing")
    unique, missing = client_spans(telemetry)
    assert attributes(unique)["error.type"] == "sqlite3.IntegrityError"
    assert attributes(missing)["error.type"] == "sqlite3.OperationalError"
    assert unique.status.description == "IntegrityError"
    assert calls(telemetry, "sqlite", "INSERT") == 1


def test_connections_and_cursors_stay_real_sqlite3_objects(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """The traced connection is a sqlite3.Connection: `with conn:` yields it, its cursors
    are sqlite3.Cursors whose .connection is it, sqlite3.Row, next(), lastrowid and
    backup() (both ways, with a plain connection too) work as without obskit."""
    connection = connect(database)
    assert isinstance(connection, sqlite3.Connection)
    assert isinstance(connection, TracedConnection)
    with connection as same:
        assert same is connection
        cursor = same.execute("INSERT INTO orders (sku, qty) VALUES ('z', 7)")
    assert isinstance(cursor, TracedCursor)
    assert cursor.lastrowid == 2
    assert cursor.connection is connection
    connection.row_factory = sqlite3.Row
    rows = connection.execute("SELECT sku FROM orders ORDER BY id")
    assert [row["sku"] for row in rows] == ["first", "z"]
    assert next(connection.execute("SELECT 1"))[0] == 1
    traced_copy = connect(":memory:")
    connection.backup(traced_copy)
    plain_copy = sqlite3.Connection(":memory:")  # made directly: not traced
    traced_copy.backup(plain_copy)
    assert plain_copy.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
    plain_copy.close()
    assert len(client_spans(telemetry)) == 0  # no trace: nothing to be a child of


class _Audited(sqlite3.Connection):
    """A user's connection class, as passed to connect(factory=...)."""

    opened = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _Audited.opened += 1


class _Shouting(sqlite3.Cursor):
    """A user's cursor class whose execute() rewrites the SQL before sqlite3 runs it."""

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        return super().execute(sql.replace("qty", "upper(sku)"), *args)


def test_factories_of_your_own_keep_working_and_are_traced(
    telemetry: Capture, database: Path, connect: Callable[..., Any]
) -> None:
    """connect(factory=) and cursor(factory=) with classes of your own: your classes'
    code runs, isinstance holds, and the statement is recorded as your class hands it
    to sqlite3."""
    connection = connect(database, factory=_Audited)
    assert isinstance(connection, _Audited)
    assert _Audited.opened == 1
    with obskit.span("handler"):
        cursor = connection.cursor(factory=_Shouting)
        assert isinstance(cursor, _Shouting)
        assert cursor.execute("SELECT qty FROM orders").fetchall() == [("FIRST",)]
    (span,) = client_spans(telemetry)
    assert attributes(span)["db.query.text"] == "SELECT upper(sku) FROM orders"


def test_switched_off_by_disabled_instrumentations_and_by_db_spans(
    database: Path, connect: Callable[..., Any]
) -> None:
    """disabled_instrumentations=["sqlite3"] returns plain connections; db_spans=False
    records nothing from a traced connection; re-enabled, the same connection records."""
    with capture(disabled_instrumentations=["sqlite3"]) as telemetry:
        connection = connect(database)
        assert type(connection) is sqlite3.Connection
        assert type(connection.cursor()) is sqlite3.Cursor
        with obskit.span("handler"):
            connection.execute("SELECT 1").fetchall()
        assert client_spans(telemetry) == []
        assert calls(telemetry, "sqlite", "SELECT") == 0
    with capture(db_spans=False) as telemetry:
        traced = connect(database)
        with obskit.span("handler"):
            traced.execute("SELECT 1").fetchall()
        assert client_spans(telemetry) == []
        assert calls(telemetry, "sqlite", "SELECT") == 0
    with capture() as telemetry:
        with obskit.span("handler"):
            traced.execute("SELECT 1").fetchall()
        assert [span.name for span in client_spans(telemetry)] == ["SELECT"]


def test_after_shutdown_a_traced_connection_passes_through(
    database: Path, connect: Callable[..., Any]
) -> None:
    """After obskit.shutdown() a connection made while it ran still works and records
    nothing (no error, no span)."""
    with capture():
        connection = connect(database)
    assert connection.execute("SELECT qty FROM orders").fetchall() == [(1,)]


def test_sqlite3_imported_after_init_is_covered() -> None:
    """A process that imports sqlite3 only after init() gets traced connections and a
    span per query."""
    code = """
        import sys
        import obskit
        from obskit.testing import capture
        with capture() as telemetry:
            assert "sqlite3" not in sys.modules, "imported before init()"
            import sqlite3
            connection = sqlite3.connect(":memory:")
            with obskit.span("handler"):
                connection.execute("SELECT 1").fetchall()
            connection.close()
            print(type(connection).__name__, [s.name for s in telemetry.spans])
    """
    # Without coverage measurement in the child: coverage keeps its data with sqlite3,
    # which it would import first.
    result = run_python(code, coverage=False, check=True)
    assert result.stdout.strip().splitlines()[-1] == "TracedConnection ['SELECT', 'handler']"


def test_the_databases_page_example_exports_what_the_page_says(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """docs/databases.md's example, run as a program exporting over OTLP: `checkout`
    with the children `INSERT orders` and `SELECT orders`, the latter's query text
    literal-free, as the page says."""
    page = (Path(__file__).parents[1] / "docs" / "databases.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(.*?)```", page, re.S)
    assert "`SELECT qty FROM orders WHERE sku = ?`" in page
    run_python(example, {"OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint}, check=True)
    spans = {span.name: span for span in http_receiver.wait_for(3)}
    assert set(spans) == {"checkout", "INSERT orders", "SELECT orders"}
    for name in ("INSERT orders", "SELECT orders"):
        assert spans[name].parent_span_id == spans["checkout"].span_id
    assert spans["SELECT orders"].attributes["db.query.text"] == (
        "SELECT qty FROM orders WHERE sku = ?"
    )
