"""psycopg2: every cursor's ``execute``/``executemany`` is one database call
(:mod:`obskit._db.call`).

psycopg2's connection and cursor are C types, but psycopg2 documents subclassing them
through ``connection_factory`` and ``cursor_factory``. ``psycopg2.connect`` is wrapped
to ask for :class:`TracedConnection` — or, when you pass a ``connection_factory`` of
your own, a subclass of yours with obskit's class under it
(:mod:`obskit._db.subclasses`) — and that connection does the same for whichever
cursor class a ``cursor()`` call ends up with (its ``cursor_factory`` argument, the
connection's ``cursor_factory``, ``DictCursor`` from ``DictConnection``...). Your
overrides run first; the SQL is recorded as it reaches psycopg2. The objects are real
psycopg2 connections and cursors: C functions that take one (``register_type``,
``sql.Composable.as_string``) accept them; ``isinstance`` holds, ``type(conn) is X``
does not. A factory that is not a subclass of psycopg2's class (a function) is left as
it is: its connections or cursors are not traced. Not recorded: ``callproc``,
``copy_*``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import psycopg2.extensions  # type: ignore[import-untyped, unused-ignore]
import wrapt

from obskit._db import call as _call
from obskit._db.query_text import as_text
from obskit._db.subclasses import traced_subclass
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "psycopg2"
SYSTEM = "postgresql"
#: ``connect()``'s positional parameters before ``connection_factory``.
_FACTORY_POSITION = 1


def patch(module: ModuleType) -> None:
    """Make ``module.connect`` (``psycopg2``'s) build traced connections."""
    wrapt.wrap_function_wrapper(module, "connect", _connect)


def _connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if library_hooks.enabled(NAME):
        try:
            positional = len(args) > _FACTORY_POSITION
            chosen = args[_FACTORY_POSITION] if positional else kwargs.get("connection_factory")
            traced = traced_subclass(chosen or psycopg2.extensions.connection, TracedConnection)
            if traced is not None:
                if positional:
                    args = (*args[:_FACTORY_POSITION], traced, *args[_FACTORY_POSITION + 1 :])
                else:
                    kwargs["connection_factory"] = traced
        except Exception as error:
            _internal_errors.report("db.psycopg2", error)
    return wrapped(*args, **kwargs)


def _recorded(cursor: Any, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``method(*args, **kwargs)`` (a method of ``cursor``) as one database call."""
    call = None
    if library_hooks.enabled(NAME) and _call.current() is None:
        try:
            sql = as_text(args[0] if args else kwargs.get("query"), cursor)
            if sql is not None:
                call = _call.begin(target(cursor.connection), sql)
        except Exception as error:
            _internal_errors.report("db.psycopg2", error)
    return _call.run(call, method, *args, **kwargs)


class TracedCursor(psycopg2.extensions.cursor):  # type: ignore[misc, unused-ignore]
    """A psycopg2 cursor whose ``execute``/``executemany`` are recorded."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """``cursor.execute()``, recorded."""
        return _recorded(self, super().execute, args, kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        """``cursor.executemany()``, recorded."""
        return _recorded(self, super().executemany, args, kwargs)


class TracedConnection(psycopg2.extensions.connection):  # type: ignore[misc, unused-ignore]
    """A psycopg2 connection whose cursors are traced."""

    #: Where this connection's calls go, once known.
    obskit_target: _call.Target | None = None

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """``connection.cursor()``, making a traced cursor of the class it would make."""
        if "cursor_factory" in kwargs:
            chosen = kwargs["cursor_factory"]
        elif len(args) > 1:
            chosen = args[1]
        else:
            chosen = None
        traced = traced_subclass(
            chosen or self.cursor_factory or psycopg2.extensions.cursor, TracedCursor
        )
        if traced is not None:
            if len(args) > 1:
                args = (args[0], traced, *args[2:])
            else:
                kwargs["cursor_factory"] = traced
        return super().cursor(*args, **kwargs)


def target(connection: Any) -> _call.Target:
    """The :class:`~obskit._db.call.Target` of a psycopg2 connection (kept on a traced
    one)."""
    found = getattr(connection, "obskit_target", None)
    if found is None:
        found = _call.Target(SYSTEM, _call.postgresql_where(connection))
        if isinstance(connection, TracedConnection):
            connection.obskit_target = found
    return found
