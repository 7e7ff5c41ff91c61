"""SQLAlchemy 2.x over sqlite3 (a real file) and PostgreSQL (psycopg sync and async,
psycopg2): one CLIENT span per statement — SQLAlchemy's, though the driver underneath is
instrumented too — with the dialect's system, the URL's database and server, and one
observation of the duration histogram."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text  # noqa: E402
from sqlalchemy.exc import IntegrityError, OperationalError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

import obskit  # noqa: E402
from obskit.integrations.databases.sqlite3 import TracedConnection  # noqa: E402
from obskit.testing import Capture, capture  # noqa: E402
from tests.db_checks import (  # noqa: E402
    CANARY,
    attributes,
    calls,
    client_spans,
    everything,
    exemplar_trace_ids,
    is_child_of,
)
from tests.postgres_server import Postgres, postgres, run_sql  # noqa: E402, F401 - the fixture
from tests.servers import run_python  # noqa: E402

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sku", String(40), unique=True),
    Column("qty", Integer),
)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    qty: Mapped[int]


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Any]:
    """An engine on a fresh sqlite file with one item, made before obskit starts."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'shop.sqlite3'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(items).values(sku="first", qty=1))
    engine.dispose()  # the next connection is made while obskit runs
    yield engine
    engine.dispose()


@pytest.fixture
def telemetry(sqlite_engine: Any) -> Iterator[Capture]:
    with capture() as recorded:
        yield recorded


def test_one_span_per_statement_though_sqlite3_is_instrumented_too(
    sqlite_engine: Any, telemetry: Capture
) -> None:
    """A Core select through an engine made before init(), on a traced sqlite3
    connection: one CLIENT child span, SQLAlchemy's, with the URL's database file and
    the statement's literal-free text; the histogram's exemplar is its trace id."""
    with sqlite_engine.connect() as connection, obskit.span("handler"):
        rows = connection.execute(select(items.c.sku).where(items.c.qty > 0)).all()
        assert isinstance(connection.connection.dbapi_connection, TracedConnection)
    assert [tuple(row) for row in rows] == [("first",)]
    (span,) = client_spans(telemetry)
    assert span.name == "SELECT items"
    assert is_child_of(span, telemetry.span("handler"))
    assert attributes(span) == {
        "db.system.name": "sqlite",
        "db.namespace": str(sqlite_engine.url.database),
        "db.operation.name": "SELECT",
        "db.collection.name": "items",
        "db.query.text": "SELECT items.sku \nFROM items \nWHERE items.qty > ?",
    }
    assert calls(telemetry, "sqlite", "SELECT") == 1
    assert exemplar_trace_ids(telemetry, "sqlite", "SELECT") == {telemetry.trace_id(span)}


def test_orm_session_statements_are_each_one_span(sqlite_engine: Any, telemetry: Capture) -> None:
    """An ORM session's INSERT (several rows, one executemany), SELECT and UPDATE:
    one span each; a canary value never reaches a span, log or metric."""
    with Session(sqlite_engine) as session, obskit.span("handler"):
        session.add_all([Item(sku=CANARY, qty=2), Item(sku="b", qty=3)])
        session.flush()
        found = session.scalars(select(Item).where(Item.sku == CANARY)).one()
        found.qty = 9
        session.commit()
    names = [span.name for span in client_spans(telemetry)]
    assert names.count("SELECT items") == 1
    assert names.count("UPDATE items") == 1
    assert 1 <= names.count("INSERT items") <= 2  # one batch, or one per row on old sqlite
    assert len(names) == 2 + names.count("INSERT items")
    assert CANARY not in everything(telemetry)


def test_errors_reach_the_caller_as_sqlalchemy_raises_them(
    sqlite_engine: Any, telemetry: Capture
) -> None:
    """A unique violation and a missing table raise SQLAlchemy's IntegrityError and
    OperationalError wrapping the driver's; each span has the driver's error.type; the
    next statement is recorded as usual."""
    import sqlite3

    with sqlite_engine.connect() as connection, obskit.span("handler"):
        with pytest.raises(IntegrityError) as unique:
            connection.execute(insert(items).values(sku="first", qty=2))
        assert type(unique.value.orig) is sqlite3.IntegrityError
        connection.rollback()
        with pytest.raises(OperationalError):
            connection.execute(text("SELECT * FROM missing"))
        connection.rollback()
        assert connection.execute(text("SELECT 1")).scalar() == 1
    failed_insert, failed_select, fine = client_spans(telemetry)
    assert attributes(failed_insert)["error.type"] == "sqlite3.IntegrityError"
    assert attributes(failed_select)["error.type"] == "sqlite3.OperationalError"
    assert "error.type" not in attributes(fine)
    assert fine.name == "SELECT"


def test_a_call_whose_error_event_never_came_does_not_silence_the_next(
    sqlite_engine: Any, telemetry: Capture
) -> None:
    """With skip_user_error_events SQLAlchemy sends no handle_error: the failed
    statement's span still ends (when the next statement starts) and the next one is
    recorded."""
    with sqlite_engine.connect() as connection, obskit.span("handler"):
        quiet = connection.execution_options(skip_user_error_events=True)
        with pytest.raises(OperationalError):
            quiet.execute(text("SELECT * FROM missing"))
        connection.rollback()
        connection.execute(text("SELECT 2")).scalar()
    assert [span.name for span in client_spans(telemetry)] == ["SELECT missing", "SELECT"]


def test_switched_off_sqlalchemy_leaves_the_driver_to_record(sqlite_engine: Any) -> None:
    """disabled_instrumentations=["sqlalchemy"]: the sqlite3 driver records the same
    statement (one span still); with sqlite3 off too, nothing is recorded."""
    with capture(disabled_instrumentations=["sqlalchemy"]) as telemetry:
        with sqlite_engine.connect() as connection, obskit.span("handler"):
            connection.execute(text("SELECT qty FROM items")).all()
        assert [span.name for span in client_spans(telemetry)] == ["SELECT items"]
    sqlite_engine.dispose()
    with capture(disabled_instrumentations=["sqlalchemy", "sqlite3"]) as telemetry:
        with sqlite_engine.connect() as connection, obskit.span("handler"):
            connection.execute(text("SELECT qty FROM items")).all()
        assert client_spans(telemetry) == []
        assert calls(telemetry, "sqlite", "SELECT") == 0


def test_db_spans_off_records_nothing(sqlite_engine: Any) -> None:
    """db_spans=False: no span and no observation from SQLAlchemy or the driver."""
    with capture(db_spans=False) as telemetry:
        with sqlite_engine.connect() as connection, obskit.span("handler"):
            connection.execute(text("SELECT qty FROM items")).all()
        assert client_spans(telemetry) == []
        assert calls(telemetry, "sqlite", "SELECT") == 0


@pytest.fixture
def pg_items(postgres: Postgres) -> Postgres:  # noqa: F811
    """A fresh ``items`` table with one row on PostgreSQL, made before obskit starts."""
    run_sql(
        postgres,
        "DROP TABLE IF EXISTS items",
        "CREATE TABLE items (id serial PRIMARY KEY, sku varchar(40) UNIQUE, qty int)",
        "INSERT INTO items (sku, qty) VALUES ('first', 1)",
    )
    return postgres


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_engines_make_one_span_per_statement(driver: str, pg_items: Postgres) -> None:
    """postgresql+psycopg / +psycopg2: one span per statement with the URL's database,
    host and port; a unique violation is SQLAlchemy's IntegrityError as usual."""
    pytest.importorskip(driver)
    engine = sqlalchemy.create_engine(f"postgresql+{driver}://{pg_items.url}")
    try:
        engine.connect().close()  # the dialect's first-connect queries: not the point
        with capture() as telemetry:
            with engine.connect() as connection, obskit.span("handler"):
                assert connection.execute(select(items.c.qty)).scalar() == 1
                with pytest.raises(IntegrityError):
                    connection.execute(insert(items).values(sku="first", qty=2))
            spans = client_spans(telemetry)
            assert [span.name for span in spans] == ["SELECT items", "INSERT items"]
            assert attributes(spans[0])["server.address"] == "127.0.0.1"
            assert attributes(spans[0])["server.port"] == pg_items.port
            assert attributes(spans[0])["db.namespace"] == pg_items.dbname
            assert attributes(spans[1])["db.response.status_code"] == "23505"
    finally:
        engine.dispose()


def test_async_engine_makes_one_span_per_statement(pg_items: Postgres) -> None:
    """An AsyncEngine (postgresql+psycopg, async): one span per statement, a child of
    the task's current span, though psycopg's async cursor is instrumented too."""
    pytest.importorskip("psycopg")
    from sqlalchemy.ext.asyncio import create_async_engine

    async def work() -> list[Any]:
        engine = create_async_engine(f"postgresql+psycopg://{pg_items.url}")
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))  # first-connect queries before
                with obskit.span("task"):
                    result = await connection.execute(select(items.c.sku))
                    rows = list(result.all())
                    await connection.execute(text("UPDATE items SET qty = qty + 1"))
            return rows
        finally:
            await engine.dispose()

    with capture() as telemetry:
        rows = asyncio.run(work())
        assert [tuple(row) for row in rows] == [("first",)]
        task = telemetry.span("task")
        spans = [span for span in client_spans(telemetry) if is_child_of(span, task)]
        assert [span.name for span in spans] == ["SELECT items", "UPDATE items"]
        assert len(client_spans(telemetry)) == 2  # SELECT 1 ran outside any trace: no span


def test_sqlalchemy_imported_after_init_is_covered(tmp_path: Path) -> None:
    """A process that imports SQLAlchemy only after init() records its statements, once
    each."""
    code = f"""
        import sys
        import obskit
        from obskit.testing import capture
        with capture() as telemetry:
            assert "sqlalchemy" not in sys.modules, "imported before init()"
            import sqlalchemy
            engine = sqlalchemy.create_engine("sqlite:///{tmp_path / "late.sqlite3"}")
            with engine.connect() as connection, obskit.span("handler"):
                connection.execute(sqlalchemy.text("SELECT 1")).scalar()
            engine.dispose()
            print([span.name for span in telemetry.spans])
    """
    result = run_python(code, check=True)
    assert result.stdout.strip().splitlines()[-1] == "['SELECT', 'handler']"
