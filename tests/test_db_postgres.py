"""psycopg (3, sync and async) and psycopg2 against a real PostgreSQL server: each
execute/executemany is one CLIENT span inside a trace (with the server's address and
database) and one observation of the duration histogram; the drivers' own behaviour —
results, errors, factories — is what it is without obskit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import obskit
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
from tests.postgres_server import Postgres, postgres, run_sql  # noqa: F401 - the fixture
from tests.servers import run_python

DRIVERS = ["psycopg", "psycopg2"]


def _connect(driver: str, server: Postgres) -> Any:
    """A connection of ``driver`` in autocommit mode (each statement its own)."""
    module = pytest.importorskip(driver)
    connection = module.connect(server.dsn)
    connection.autocommit = True
    return connection


@pytest.fixture
def items(postgres: Postgres) -> Postgres:  # noqa: F811
    """A fresh ``items`` table with one row, made before obskit starts."""
    run_sql(
        postgres,
        "DROP TABLE IF EXISTS items",
        "CREATE TABLE items (id serial PRIMARY KEY, sku text UNIQUE, qty int)",
        "INSERT INTO items (sku, qty) VALUES ('first', 1)",
    )
    return postgres


@pytest.fixture
def telemetry(items: Postgres) -> Iterator[Capture]:
    with capture() as recorded:
        yield recorded


@pytest.mark.parametrize("driver", DRIVERS)
def test_execute_is_a_client_span_with_the_servers_attributes(
    driver: str, items: Postgres, telemetry: Capture
) -> None:
    """cursor.execute inside a span: one CLIENT child "SELECT items" with
    db.system.name=postgresql, db.namespace, server.address/port, the query text with
    its placeholders; the histogram's exemplar is the span's trace id."""
    connection = _connect(driver, items)
    with obskit.span("handler"):
        cursor = connection.cursor()
        cursor.execute("SELECT sku FROM items WHERE qty > 0 AND sku = %s", ("first",))
        assert cursor.fetchall() == [("first",)]
    connection.close()
    (span,) = client_spans(telemetry)
    assert span.name == "SELECT items"
    assert is_child_of(span, telemetry.span("handler"))
    assert attributes(span) == {
        "db.system.name": "postgresql",
        "db.namespace": items.dbname,
        "server.address": "127.0.0.1",
        "server.port": items.port,
        "db.operation.name": "SELECT",
        "db.collection.name": "items",
        "db.query.text": "SELECT sku FROM items WHERE qty > ? AND sku = %s",
    }
    assert calls(telemetry, "postgresql", "SELECT") == 1
    assert exemplar_trace_ids(telemetry, "postgresql", "SELECT") == {telemetry.trace_id(span)}


@pytest.mark.parametrize("driver", DRIVERS)
def test_executemany_is_one_span_and_errors_reach_the_caller_unchanged(
    driver: str, items: Postgres, telemetry: Capture
) -> None:
    """executemany is one INSERT span; a unique violation is raised as the driver raises
    it (class, SQLSTATE, message) and marks the span with error.type and
    db.response.status_code, never with the message that quotes the value."""
    module = pytest.importorskip(driver)
    connection = _connect(driver, items)
    with obskit.span("handler"):
        cursor = connection.cursor()
        cursor.executemany("INSERT INTO items (sku, qty) VALUES (%s, %s)", [("a", 1), ("b", 2)])
        cursor.execute("INSERT INTO items (sku, qty) VALUES (%s, 1)", (CANARY,))
        with pytest.raises(module.errors.UniqueViolation) as raised:
            cursor.execute("INSERT INTO items (sku, qty) VALUES (%s, 1)", (CANARY,))
    connection.close()
    assert CANARY in str(raised.value)  # PostgreSQL quotes the value: obskit must not
    many, first, failed = client_spans(telemetry)
    assert (many.name, first.name, failed.name) == ("INSERT items",) * 3
    assert attributes(failed)["error.type"] == f"{driver}.errors.UniqueViolation"
    assert attributes(failed)["db.response.status_code"] == "23505"
    assert failed.status.description == "UniqueViolation"
    assert calls(telemetry, "postgresql", "INSERT") == 3
    assert CANARY not in everything(telemetry)


def test_psycopg_connection_execute_server_cursors_and_composed_queries(
    items: Postgres, telemetry: Capture
) -> None:
    """psycopg 3: Connection.execute, a server-side (named) cursor, a dict row factory
    and an sql.Composed query are each one span; literals in the composed text are
    replaced."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql
    from psycopg.rows import dict_row

    with psycopg.connect(items.dsn) as connection, obskit.span("handler"):
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (1,)
        with connection.cursor(name="named") as named:
            named.execute("SELECT sku FROM items")
            assert named.fetchall() == [("first",)]
        with connection.cursor(row_factory=dict_row) as cursor:
            query = sql.SQL("SELECT {} FROM {} WHERE sku = {}").format(
                sql.Identifier("qty"), sql.Identifier("items"), sql.Literal(CANARY)
            )
            cursor.execute(query)
            assert cursor.fetchall() == []
    texts = [attributes(span)["db.query.text"] for span in client_spans(telemetry)]
    assert texts == [
        "SELECT count(*) FROM items",
        "SELECT sku FROM items",
        'SELECT "qty" FROM "items" WHERE sku = ?',
    ]


def test_psycopg_async_connections_are_recorded(items: Postgres, telemetry: Capture) -> None:
    """An AsyncConnection's execute/executemany and an async server cursor: one span
    each, children of the task's current span."""
    psycopg = pytest.importorskip("psycopg")

    async def work() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(items.dsn, autocommit=True) as conn:
            with obskit.span("task"):
                cursor = await conn.execute("SELECT qty FROM items")
                rows = await cursor.fetchall()
                async with conn.cursor() as many:
                    await many.executemany(
                        "INSERT INTO items (sku, qty) VALUES (%s, %s)", [("x", 1), ("y", 2)]
                    )
                async with conn.transaction(), conn.cursor(name="async-named") as named:
                    await named.execute("SELECT sku FROM items ORDER BY id")
                    rows += await named.fetchall()
                return rows

    assert asyncio.run(work()) == [(1,), ("first",), ("x",), ("y",)]
    task = telemetry.span("task")
    spans = client_spans(telemetry)
    assert [span.name for span in spans] == ["SELECT items", "INSERT items", "SELECT items"]
    assert all(is_child_of(span, task) for span in spans)


def test_psycopg2_factories_and_c_functions_keep_working(
    items: Postgres, telemetry: Capture
) -> None:
    """psycopg2 connections and cursors stay real psycopg2 objects: cursor_factory
    (on connect and per cursor), connection_factory, register_uuid, sql.Composed's
    as_string and execute_values work as without obskit, each query one span, values
    inlined by execute_values replaced."""
    pytest.importorskip("psycopg2")
    import psycopg2.extras
    from psycopg2 import sql

    with obskit.span("handler"):
        real_dict = psycopg2.connect(items.dsn, cursor_factory=psycopg2.extras.RealDictCursor)
        cursor = real_dict.cursor()
        cursor.execute("SELECT sku FROM items")
        assert cursor.fetchall() == [{"sku": "first"}]
        assert isinstance(cursor, psycopg2.extras.RealDictCursor)
        named_tuples = real_dict.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor)
        named_tuples.execute("SELECT qty FROM items")
        assert named_tuples.fetchone().qty == 1
        real_dict.close()
        dicts = psycopg2.connect(items.dsn, connection_factory=psycopg2.extras.DictConnection)
        assert isinstance(dicts, psycopg2.extras.DictConnection)
        psycopg2.extras.register_uuid(conn_or_curs=dicts)
        composed = sql.SQL("SELECT {} FROM items").format(sql.Identifier("sku"))
        assert composed.as_string(dicts) == 'SELECT "sku" FROM items'
        cursor = dicts.cursor()
        cursor.execute(composed)
        assert cursor.fetchone()["sku"] == "first"
        psycopg2.extras.execute_values(
            cursor, "INSERT INTO items (sku, qty) VALUES %s", [(CANARY, 5), ("v", 6)]
        )
        dicts.commit()
        dicts.close()
    spans = client_spans(telemetry)
    assert [span.name for span in spans] == ["SELECT items"] * 3 + ["INSERT items"]
    assert attributes(spans[-1])["db.query.text"] == (
        "INSERT INTO items (sku, qty) VALUES (?,?),(?,?)"
    )
    assert CANARY not in everything(telemetry)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "settings",
    [{"disabled_instrumentations": DRIVERS}, {"db_spans": False}],
    ids=["disabled_instrumentations", "db_spans_off"],
)
def test_switched_off_the_driver_records_nothing(
    driver: str, settings: dict[str, Any], items: Postgres
) -> None:
    """With the driver in disabled_instrumentations, or db_spans=False: no span and no
    observation; the query works."""
    with capture(**settings) as telemetry:
        connection = _connect(driver, items)
        with obskit.span("handler"):
            cursor = connection.cursor()
            cursor.execute("SELECT qty FROM items")
            assert cursor.fetchall() == [(1,)]
        connection.close()
        assert client_spans(telemetry) == []
        assert calls(telemetry, "postgresql", "SELECT") == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_driver_imported_after_init_is_covered(driver: str, items: Postgres) -> None:
    """A process that imports the driver only after init() records its queries."""
    pytest.importorskip(driver)
    code = f"""
        import sys
        import obskit
        from obskit.testing import capture
        with capture() as telemetry:
            assert {driver!r} not in sys.modules, "imported before init()"
            import {driver}
            connection = {driver}.connect({items.dsn!r})
            with obskit.span("handler"):
                connection.cursor().execute("SELECT 1")
            connection.close()
            print([span.name for span in telemetry.spans])
    """
    result = run_python(code, check=True)
    assert result.stdout.strip().splitlines()[-1] == "['SELECT', 'handler']"


def _django_code(server: Postgres, block: str) -> str:
    return f"""
        import sys
        {block}
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["obskit.integrations.django"],
            DATABASES={{"default": {{
                "ENGINE": "django.db.backends.postgresql", "NAME": {server.dbname!r},
                "USER": {server.user!r}, "HOST": {server.host!r}, "PORT": {server.port},
            }}}},
            OBSKIT={{"service_name": "django-pg", "traces_exporter": "none",
                     "metrics_port": 0}},
        )
        django.setup()
        import obskit
        from obskit.testing import capture
        from django.db import connection
        with capture() as telemetry:
            connection.ensure_connection()  # its set-up queries (time zone): not the point
            with obskit.span("view"):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT qty FROM items WHERE sku = %s", ["first"])
                    assert cursor.fetchall() == [(1,)]
            client = [s for s in telemetry.spans if s.kind.name == "CLIENT"]
            print(type(connection.connection).__module__,
                  [(s.name, s.attributes["db.query.text"]) for s in client])
    """


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
def test_django_on_postgresql_makes_one_span_per_query(driver: str, items: Postgres) -> None:
    """Django's PostgreSQL backend over psycopg or psycopg2 (both instrumented): one
    CLIENT span per query — Django's — not one more from the driver."""
    pytest.importorskip("django")
    pytest.importorskip(driver)
    # Django picks psycopg (3) when it is importable: hide it to get psycopg2.
    block = 'sys.modules["psycopg"] = None' if driver == "psycopg2" else "pass"
    result = run_python(_django_code(items, block), check=True, timeout=120)
    module, spans = result.stdout.strip().splitlines()[-1].split(" ", 1)
    # psycopg's own connection class (its cursors are wrapped in place), or obskit's
    # subclass of psycopg2's: the driver's instrumentation was there and stood aside.
    assert module == {"psycopg": "psycopg", "psycopg2": "obskit"}[driver] or module.startswith(
        {"psycopg": "psycopg.", "psycopg2": "obskit.integrations.databases."}[driver]
    )
    assert spans == "[('SELECT items', 'SELECT qty FROM items WHERE sku = %s')]"
