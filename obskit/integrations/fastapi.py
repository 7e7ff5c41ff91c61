"""FastAPI apps: what obskit's Starlette support needs to know about FastAPI.

A FastAPI app is a Starlette app (see :mod:`obskit.integrations.starlette`); two things
are FastAPI's own:

- **Its own request telemetry** (FastAPI 0.16x, when a tracer provider is configured):
  for every request obskit records or excludes, obskit sets ``scope["fastapi.telemetry"]``
  to None, which is how FastAPI marks a request whose telemetry is handled further out
  (a mounted app's, an excluded one's). One SERVER span per request, obskit's; requests
  before ``obskit.init()`` keep FastAPI's.
- **Routers included by reference** (FastAPI 0.16x): ``app.routes`` holds a view of each
  included router, and a route's own ``path`` lacks the prefixes it is included under.
  FastAPI's public :func:`fastapi.routing.iter_route_contexts` lists every route with its
  full path; obskit maps and matches those (older FastAPI copies each route with its
  prefixed path into ``app.routes``, which needs nothing more).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import routing as _routing

from obskit.integrations import asgi as _asgi
from obskit.integrations import starlette as _starlette

#: The scope key FastAPI's own per-request telemetry checks.
TELEMETRY_KEY = "fastapi.telemetry"

if TELEMETRY_KEY not in _asgi.QUIET_KEYS:
    _asgi.QUIET_KEYS.append(TELEMETRY_KEY)

_iter_route_contexts: Any = getattr(_routing, "iter_route_contexts", None)


def expand(routes: Iterable[Any]) -> list[tuple[Any, Any]]:
    """Each route as ``scope["route"]`` holds it, with the view that matches it and
    carries its full path (FastAPI's route contexts)."""
    return [(context.original_route, context) for context in _iter_route_contexts(routes)]


if _iter_route_contexts is not None:
    _starlette.expand = expand
