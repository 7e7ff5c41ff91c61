"""A library module the tests import only after ``init()`` (for the import hooks)."""

from __future__ import annotations


def fetch(value: int) -> int:
    """The call an instrumentation wraps."""
    return value * 2
