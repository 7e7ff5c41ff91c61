"""What a span may say about a SQL query: its text with every literal replaced by ``?``,
its operation (``SELECT``, ``INSERT``, ...) and the table it names first.

``db.query.text`` must never carry user data. Drivers send values as parameters
(``%s``, ``?``, ``$1``, ``:name`` stay as they are); values still written into the SQL
— string literals (``'...'``, ``E'...'``, ``X'...'``, ``$$...$$``) and numbers — become
``?``. An unterminated string hides everything after its quote. The result of
:func:`describe` is cached per SQL text (bounded), as applications repeat their
queries.
"""

from __future__ import annotations

import re
from typing import NamedTuple

UNKNOWN = "UNKNOWN"
#: Literals, left to right: strings first, so a digit inside one is not a number.
_LITERAL = re.compile(
    r"(?:(?<![\w$])[Ee])'(?:[^'\\]|\\.|'')*(?:'|\Z)"  # E'...': backslash escapes
    r"|(?:(?<![\w$])(?:[XxBbNn]|[Uu]&))?'(?:[^']|'')*(?:'|\Z)"  # standard strings
    r"|\$\$.*?(?:\$\$|\Z)"  # dollar quotes
    r"|\$([A-Za-z_]\w*)\$.*?(?:\$\1\$|\Z)"
    r"|(?<![\w.$])-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])",
    re.DOTALL,
)
#: The first word after leading blanks, comments and parentheses.
_VERB = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z)|\()*([A-Za-z]+)", re.DOTALL)
_TABLE = re.compile(
    r"(?:SELECT\b.*?\bFROM|(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO|UPDATE(?:\s+OR\s+\w+)?"
    r"|DELETE\s+FROM|(?:CREATE|DROP|ALTER|TRUNCATE)\s+(?:TEMP\w*\s+)?TABLE(?:\s+IF\s+(?:NOT\s+)?EXISTS)?)\s+((?:[\"`\[]?\w+[\"`\]]?\.)*[\"`\[]?\w+)",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = re.compile(r"[\"`\[\]]")
#: Longest operation name kept (a label value of the duration histogram).
_VERB_MAX = 32
#: Queries longer than this are described afresh each time, not cached.
CACHED_LENGTH_MAX = 4096
_CACHE_MAX = 512


class Query(NamedTuple):
    """A query as spans and metrics show it."""

    #: ``db.query.text``: the SQL with every literal replaced by ``?``.
    text: str
    #: ``db.operation.name`` (``SELECT``; ``BATCH`` or ``BATCH INSERT`` for a script).
    operation: str
    #: ``db.collection.name``, or ``""`` when the query names none obskit can see.
    collection: str
    #: The span name: ``"{operation} {collection}"``, or the operation alone.
    name: str
    #: ``db.operation.batch.size``: statements in a script of several, else 0.
    batch_size: int = 0


def sanitize(sql: str) -> str:
    """``sql`` with string and number literals replaced by ``?``."""
    return _LITERAL.sub("?", sql)


def operation(sql: str) -> str:
    """The SQL verb (``SELECT``, ``INSERT``, ...), upper case; ``UNKNOWN`` if none."""
    found = _VERB.match(sql)
    return found.group(1)[:_VERB_MAX].upper() if found else UNKNOWN


def collection(sql: str) -> str:
    """The table a SELECT/INSERT/UPDATE/DELETE (or a CREATE/DROP/ALTER/TRUNCATE TABLE)
    names first, or ``""``."""
    found = _VERB.match(sql)
    if not found:
        return ""
    table = _TABLE.match(sql, found.start(1))
    return _QUOTES.sub("", table.group(1)) if table else ""


_cache: dict[str, Query] = {}


def describe(sql: str) -> Query:
    """The :class:`Query` of one statement."""
    query = _cache.get(sql)
    if query is not None:
        return query
    text = sanitize(sql)
    verb = operation(text)
    table = collection(text)
    query = Query(text, verb, table, f"{verb} {table}" if table else verb)
    if len(sql) <= CACHED_LENGTH_MAX:
        if len(_cache) >= _CACHE_MAX:
            _cache.pop(next(iter(_cache)), None)  # the oldest entry
        _cache[sql] = query
    return query


def describe_script(sql: str) -> Query:
    """The :class:`Query` of a script of ``;``-separated statements (sqlite3's
    ``executescript``): one statement is described as such; several are a batch, named
    ``BATCH {operation}`` when they share one, else ``BATCH``."""
    text = sanitize(sql)
    # Literals are gone, so every ';' left ends a statement (or sits in a comment).
    statements = [part for part in text.split(";") if part.strip()]
    if len(statements) <= 1:
        return describe(sql)
    verbs = {operation(part) for part in statements}
    tables = {collection(part) for part in statements}
    verb = f"BATCH {next(iter(verbs))}" if len(verbs) == 1 else "BATCH"
    table = next(iter(tables)) if len(tables) == 1 else ""
    return Query(text, verb, table, f"{verb} {table}" if table else verb, len(statements))


def as_text(query: object, context: object = None) -> str | None:
    """A driver's query as text: a ``str``; ``bytes`` decoded; a composed query
    (psycopg's and psycopg2's ``sql.Composable``) rendered by its public ``as_string``
    for ``context`` (a connection or cursor). None when it is none of these or will not
    render (the driver then raises its own error)."""
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode("utf-8", "replace")
    render = getattr(query, "as_string", None)
    if render is None:
        return None
    try:
        text = render(context)
    except Exception:  # the driver's own execute reports what is wrong with it
        return None
    return text if isinstance(text, str) else None
