"""The query text a database span shows: literals replaced, the operation and the table
found, scripts summarised; a driver's query objects turned into text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obskit._db import query_text
from obskit._db.query_text import (
    as_text,
    collection,
    describe,
    describe_script,
    operation,
    sanitize,
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT a1, 'x''y' FROM t2 WHERE n = 42 AND f = -1.5 AND p = %s",
            "SELECT a1, ? FROM t2 WHERE n = ? AND f = ? AND p = %s",
        ),
        (
            "SELECT * FROM t WHERE a = E'it\\'s' AND b = $1 AND c = :name AND d = ?",
            "SELECT * FROM t WHERE a = ? AND b = $1 AND c = :name AND d = ?",
        ),
        ("SELECT 0xFF, 1e10, .5, 2.5E-3, X'00ff', N'text'", "SELECT ?, ?, ?, ?, ?, ?"),
        (
            "INSERT INTO t VALUES ($$secret$$), ($tag$more; secret$tag$)",
            "INSERT INTO t VALUES (?), (?)",
        ),
        ('SELECT "col1", t2.c3 FROM "table9"', 'SELECT "col1", t2.c3 FROM "table9"'),
        ("UPDATE t SET name = 'never ends", "UPDATE t SET name = ?"),
        ("SELECT 'a' || 'b'", "SELECT ? || ?"),
    ],
)
def test_literals_are_replaced_and_the_rest_is_kept(sql: str, expected: str) -> None:
    """Strings (standard, E'', X'', N'', dollar-quoted, unterminated) and numbers (signed,
    decimal, exponent, hex) become ?; identifiers and placeholders stay."""
    assert sanitize(sql) == expected


@given(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
def test_no_string_or_number_literal_survives(text: str, number: int, real: float) -> None:
    """Whatever a string literal holds (quotes doubled as SQL does) and whatever number
    is written, the sanitised text is the same."""
    quoted = "'" + text.replace("'", "''") + "'"
    sql = f"SELECT * FROM t WHERE a = {quoted} AND b = {number} AND c = {real!r}"
    assert sanitize(sql) == "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"


@pytest.mark.parametrize(
    ("sql", "verb", "table"),
    [
        ("select * from orders where id = 1", "SELECT", "orders"),
        ('SELECT "catalog_book"."id" FROM "catalog_book"', "SELECT", "catalog_book"),
        ('select * from "public"."t1"', "SELECT", "public.t1"),
        ("/* app */ -- note\n (SELECT 1)", "SELECT", ""),
        ("INSERT OR REPLACE INTO kv VALUES (?, ?)", "INSERT", "kv"),
        ("DELETE FROM [dbo].[x]", "DELETE", "dbo.x"),
        ("create table if not exists notes (body text)", "CREATE", "notes"),
        ("WITH q AS (SELECT 1) SELECT * FROM q", "WITH", ""),
        ("PRAGMA foreign_keys = ON", "PRAGMA", ""),
        ("", "UNKNOWN", ""),
        ("42", "UNKNOWN", ""),
    ],
)
def test_operation_and_collection(sql: str, verb: str, table: str) -> None:
    """The operation is the first word after comments and parentheses (UNKNOWN if
    none); the collection is the first table a statement names (quotes dropped)."""
    assert (operation(sql), collection(sql)) == (verb, table)
    query = describe(sql)
    assert query.name == (f"{verb} {table}" if table else verb)


def test_scripts_of_several_statements_are_batches() -> None:
    """One statement: as describe(); several: BATCH <op> when they share an operation
    (with their table if they share one too), else BATCH, with the statement count."""
    assert describe_script("INSERT INTO a VALUES (1);") == describe("INSERT INTO a VALUES (1);")
    same = describe_script("INSERT INTO a VALUES (1); INSERT INTO a VALUES ('s;x');")
    assert (same.name, same.batch_size) == ("BATCH INSERT a", 2)
    assert same.text == "INSERT INTO a VALUES (?); INSERT INTO a VALUES (?);"
    mixed = describe_script("CREATE TABLE a (x); INSERT INTO b VALUES (1)")
    assert (mixed.operation, mixed.collection, mixed.batch_size) == ("BATCH", "", 2)


def test_descriptions_are_cached_within_a_bound() -> None:
    """Repeated SQL is described once; the cache never holds more than its bound, and
    very long SQL is not kept."""
    first = describe("SELECT 1 FROM cached")
    assert describe("SELECT 1 FROM cached") is first
    for number in range(query_text._CACHE_MAX + 10):
        describe(f"SELECT {number} FROM t{number}")
    assert len(query_text._cache) <= query_text._CACHE_MAX
    long_sql = "SELECT " + ", ".join(["1"] * 3000)
    describe(long_sql)
    assert long_sql not in query_text._cache


class _Composed:
    """A stand-in for a driver's sql.Composable (the real ones are tested with psycopg
    and psycopg2 against PostgreSQL)."""

    def __init__(self, text: object, fail: bool = False) -> None:
        self.text, self.fail = text, fail

    def as_string(self, context: object) -> object:
        if self.fail:
            raise ValueError("cannot render")
        return self.text


def test_a_drivers_query_becomes_text() -> None:
    """str as is, bytes decoded, a composed query rendered; anything else, or one that
    will not render, is None (not recorded)."""
    assert as_text("SELECT 1") == "SELECT 1"
    assert as_text(b"SELECT '\xff'") == "SELECT '\ufffd'"
    assert as_text(_Composed("SELECT 2")) == "SELECT 2"
    assert as_text(_Composed("x", fail=True)) is None
    assert as_text(_Composed(b"not text")) is None
    assert as_text(42) is None
