"""Traced subclasses of a driver's C classes, through the factories drivers document.

sqlite3 (``connect(factory=)``, ``Connection.cursor(factory=)``) and psycopg2
(``connection_factory``, ``cursor_factory``) build their connections and cursors from
a class the caller may choose. obskit passes a subclass of the chosen class instead:
for the driver's own class, obskit's traced class; for the caller's class, a class
made once that inherits from it first and from obskit's traced class second, so the
caller's overrides run first and the driver receives the SQL through obskit's
methods. The objects stay real instances of the driver's types, which its C
functions require.
"""

from __future__ import annotations

from typing import Any

#: The classes made for callers' classes: (the traced class, the caller's) -> made.
_made: dict[tuple[type, type], type] = {}


def traced_subclass(chosen: Any, traced: type) -> type | None:
    """The class to build with instead of ``chosen``: ``traced`` (a direct subclass of
    the driver's class) if ``chosen`` is the driver's class, a subclass of ``chosen``
    that has ``traced`` under it if ``chosen`` subclasses the driver's class, ``chosen``
    itself if it already has ``traced``; None if it is not a subclass of the driver's
    class at all (a factory function: left as it is)."""
    (driver_class,) = traced.__bases__
    if chosen is driver_class:
        return traced
    if not isinstance(chosen, type) or not issubclass(chosen, driver_class):
        return None
    if issubclass(chosen, traced):
        return chosen
    made = _made.get((traced, chosen))
    if made is None:
        made = type(
            chosen.__name__,
            (chosen, traced),
            {"__module__": chosen.__module__, "__qualname__": chosen.__qualname__},
        )
        _made[(traced, chosen)] = made
    return made
