"""sqlite3: every ``execute``, ``executemany`` and ``executescript`` — on a connection
or on its cursors — is one database call (:mod:`obskit._db.call`).

``sqlite3.Connection`` and ``sqlite3.Cursor`` are C types whose methods cannot be
replaced, but sqlite3 documents building them from a subclass: ``connect(factory=)``
and ``Connection.cursor(factory=)``. ``sqlite3.connect`` (and
``sqlite3.dbapi2.connect``, the one Django and SQLAlchemy call) is wrapped to pass
:class:`TracedConnection` — or, when you pass a ``factory`` of your own, a subclass of
yours with obskit's class under it (:mod:`obskit._db.subclasses`) — and its
``cursor()`` does the same for cursors (Django's ``SQLiteCursorWrapper`` included).

So connections and cursors are real sqlite3 objects, not proxies: ``backup()``,
``sqlite3.Row``, ``with conn:``, ``isinstance`` and the C functions that check types
work as before; only ``type(conn)`` is obskit's subclass. Not covered: a connection
made before ``init()``, by ``sqlite3.Connection(...)`` directly, or with a ``factory``
that is not a ``Connection`` subclass, and a cursor made with a ``factory`` that is not
a ``Cursor`` subclass.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from types import ModuleType
from typing import Any

import wrapt

from obskit._db import call as _call
from obskit._db.subclasses import traced_subclass
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "sqlite3"
SYSTEM = "sqlite"
#: ``connect()``'s positional parameters before ``factory``.
_FACTORY_POSITION = 5
#: The target of a traced cursor on a connection obskit did not open.
_UNKNOWN_DATABASE = _call.Target(SYSTEM, {"db.namespace": ""})


def patch(module: ModuleType) -> None:
    """Make ``module.connect`` (``sqlite3``'s) and ``sqlite3.dbapi2.connect`` build
    traced connections."""
    sqlite: Any = module
    original = sqlite.connect
    traced = wrapt.FunctionWrapper(original, _connect)
    sqlite.connect = traced
    dbapi2: Any = sys.modules.get(f"{module.__name__}.dbapi2")
    if dbapi2 is not None and dbapi2.connect is original:
        dbapi2.connect = traced


def _connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    traced = None
    if library_hooks.enabled(NAME):
        try:
            positional = len(args) > _FACTORY_POSITION
            chosen = args[_FACTORY_POSITION] if positional else kwargs.get("factory")
            traced = traced_subclass(chosen or sqlite3.Connection, TracedConnection)
            if traced is not None:
                if positional:
                    args = (*args[:_FACTORY_POSITION], traced, *args[_FACTORY_POSITION + 1 :])
                else:
                    kwargs["factory"] = traced
        except Exception as error:
            _internal_errors.report("db.sqlite3", error)
    connection = wrapped(*args, **kwargs)
    if traced is not None and isinstance(connection, TracedConnection):
        try:
            connection.obskit_target = _call.Target(
                SYSTEM, {"db.namespace": _namespace(args, kwargs)}
            )
        except Exception as error:
            _internal_errors.report("db.sqlite3", error)
    return connection


def _namespace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``db.namespace``: the database file as given (a ``file:`` URI without its query)."""
    database = args[0] if args else kwargs.get("database", "")
    if isinstance(database, bytes):
        text = database.decode("utf-8", "replace")
    else:
        text = str(os.fspath(database)) if isinstance(database, (str, os.PathLike)) else ""
    if text.startswith("file:"):
        text = text[5:].split("?", 1)[0].split("#", 1)[0]
    return text


def _recorded(
    cursor: Any, method: Any, script: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``method(*args, **kwargs)`` (a method of ``cursor``) as one database call."""
    if _call.current() is not None or not library_hooks.enabled(NAME):
        return method(*args, **kwargs)  # an outer layer records it, or switched off
    sql = args[0] if args else kwargs.get("sql_script" if script else "sql")
    if not isinstance(sql, str):
        return method(*args, **kwargs)
    target = getattr(cursor.connection, "obskit_target", _UNKNOWN_DATABASE)
    call = _call.begin(target, sql, script=script)
    if call is None:
        return method(*args, **kwargs)
    try:
        result = method(*args, **kwargs)
    except BaseException as error:
        _call.end(call, error)
        raise
    _call.end(call)
    return result


class TracedCursor(sqlite3.Cursor):
    """A ``sqlite3.Cursor`` whose statements are recorded."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """``Cursor.execute()``, recorded."""
        return _recorded(self, super().execute, False, args, kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        """``Cursor.executemany()``, recorded."""
        return _recorded(self, super().executemany, False, args, kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> Any:
        """``Cursor.executescript()``, recorded as one call (a batch when the script
        holds several statements)."""
        return _recorded(self, super().executescript, True, args, kwargs)


class TracedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` whose cursors are traced.

    ``execute``/``executemany``/``executescript`` do what sqlite3's do — make a cursor
    with ``self.cursor()`` and run the statement on it — so the statement is recorded
    once, by the cursor, which the caller gets back.
    """

    #: Where this connection's calls go (set by ``connect``).
    obskit_target: _call.Target = _UNKNOWN_DATABASE

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``Connection.cursor()``, making a traced cursor (of your ``factory`` class)."""
        if not args and not kwargs:
            return super().cursor(TracedCursor)
        chosen = args[0] if args else kwargs.get("factory")
        traced = traced_subclass(chosen or sqlite3.Cursor, TracedCursor)
        if traced is not None:
            if args:
                args = (traced, *args[1:])
            else:
                kwargs["factory"] = traced
        return super().cursor(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """``Connection.execute()``: on a new traced cursor, returned."""
        return self.cursor().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        """``Connection.executemany()``: on a new traced cursor, returned."""
        return self.cursor().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> Any:
        """``Connection.executescript()``: on a new traced cursor, returned."""
        return self.cursor().executescript(*args, **kwargs)
