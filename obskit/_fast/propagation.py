"""The global text-map propagator, read without two Python calls per request.

``opentelemetry.propagate.get_global_textmap()`` only returns a module variable; the
accelerator (registered as ``propagation``) reads that variable directly once it has
checked, from the function's bytecode, that the function does nothing else. Off, or
when the function does more, the function is called.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import propagate

from obskit._fast import status

__all__ = ["global_textmap"]

_VARIABLE = "_HTTP_TEXT_FORMAT"
_read_variable = functools.partial(vars(propagate).__getitem__, _VARIABLE)

#: ``propagate.get_global_textmap`` or, when on, the read of the variable it returns.
global_textmap: Any = propagate.get_global_textmap


def _check() -> str | None:
    if propagate.get_global_textmap.__code__.co_names != (_VARIABLE,):
        return "opentelemetry.propagate.get_global_textmap does more than return its variable"
    if _read_variable() is not propagate.get_global_textmap():
        return "opentelemetry.propagate keeps the global propagator elsewhere"
    return None


def _apply(on: bool) -> None:
    global global_textmap
    global_textmap = _read_variable if on else propagate.get_global_textmap


status.register("propagation", _check, _apply)
