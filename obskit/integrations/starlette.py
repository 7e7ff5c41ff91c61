"""Starlette (and FastAPI) apps: instrumented in place, requests named by route template.

:func:`instrument` gives one app obskit's ASGI middleware as its outermost layer, in
place: the app object keeps its identity and type (``isinstance(app, FastAPI)`` holds),
only its class becomes a subclass whose ``__call__`` enters the middleware first. So
``uvicorn main:app`` serves it unchanged, routes added later are seen, and nothing that
runs inside the app (Starlette's error middleware, FastAPI's own request telemetry) sits
outside the request's span.

Route templates use Starlette's public routing API only:

- after the app answered, the route it picked is ``scope["route"]`` (Starlette 1.x sets
  it for every route, FastAPI for its own at any version); a map from each route of the
  app to its full template (the prefixes of the ``Mount``\\s above it included), built
  once per app by walking ``app.routes``, names it in one lookup;
- otherwise (an older Starlette's plain routes, a route reachable under two prefixes,
  a scope a middleware copied) the app's routes are matched again against the request
  as the app saw it (``route.matches(scope)``, into mounts and hosts): the first full
  match, else the first partial one (a 405);
- nothing matched: None, which obskit records as ``<unmatched>``.

A template is the framework's own text (``/items/{item_id:int}``); a mount with an app
that has no routes of its own (static files) is ``/static/{path:path}``.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.routing import Host, Match, Mount
from starlette.websockets import WebSocketDisconnect

from obskit.integrations import asgi as _asgi
from obskit.integrations.asgi import ROOT_PATH_KEY, ObskitMiddleware, RouteOf, Scope

__all__ = ["Routes", "instrument", "is_app"]

#: The instance attribute holding an instrumented app's middleware.
_MIDDLEWARE = "obskit_middleware"
#: How deep mounts and hosts are followed, and how many routes are mapped, at most.
MAX_DEPTH = 16
MAX_ROUTES = 20_000


def _each_itself(routes: Iterable[Any]) -> list[tuple[Any, Any]]:
    return [(route, route) for route in routes]


#: ``routes -> [(route, node)]``: each route as ``scope["route"]`` holds it and the object
#: that matches and names it (the same object, unless the framework routes through views
#: of its routes: :mod:`obskit.integrations.fastapi` replaces it).
expand: Callable[[Iterable[Any]], list[tuple[Any, Any]]] = _each_itself

_asgi.add_disconnect_errors(ClientDisconnect, WebSocketDisconnect)


def is_app(app: Any) -> bool:
    """Whether ``app`` is a Starlette application (a FastAPI one included)."""
    return isinstance(app, Starlette)


class Routes:
    """The route templates of one router (an app's outermost ``Router``)."""

    #: Safe to ask from another thread while the request runs (dumps, profiles).
    in_flight_safe = True

    def __init__(self, router: Any) -> None:
        self._router = weakref.ref(router)
        #: id(route) -> (route, its template, or None: match the request to know).
        self._leaves: dict[int, tuple[Any, str | None]] = {}
        self._built_for: tuple[int, int] | None = None

    def __call__(self, scope: Scope) -> str | None:
        """The template of the route the app picked for this request (None: none)."""
        route = scope.get("route")
        if route is not None:
            found = self._leaves.get(id(route))
            if found is None or found[0] is not route:
                found = self._rebuilt(route)
            if found is not None and found[1] is not None:
                return found[1]
        return self.match(scope)

    def _rebuilt(self, route: Any) -> tuple[Any, str | None] | None:
        """The entry of ``route`` after mapping the routes again, if they changed."""
        router = self._router()
        if router is None:
            return None
        routes = router.routes
        signature = (id(routes), len(routes))
        if signature == self._built_for:
            return None  # unchanged: a route of a mounted app's own (matched instead)
        leaves: dict[int, tuple[Any, str | None]] = {}
        _collect(routes, "", 0, leaves)
        self._leaves, self._built_for = leaves, signature
        found = leaves.get(id(route))
        return found if found is not None and found[0] is route else None

    def match(self, scope: Scope) -> str | None:
        """Match the request, as the app saw it, against the routes (mounts followed)."""
        router = self._router()
        if router is None:
            return None
        probe = dict(scope)
        probe["root_path"] = scope.get(ROOT_PATH_KEY, scope.get("root_path", ""))
        return _walk(router.routes, probe, "", 0)


def _add(leaves: dict[int, tuple[Any, str | None]], route: Any, template: str | None) -> None:
    if len(leaves) >= MAX_ROUTES:
        return
    known = leaves.get(id(route))
    if known is not None and known[1] != template:
        template = None  # reachable under two templates: the request decides
    leaves[id(route)] = (route, template)


def _collect(
    routes: Iterable[Any], prefix: str, depth: int, leaves: dict[int, tuple[Any, str | None]]
) -> None:
    """Map every route under ``routes`` to its full template."""
    if depth > MAX_DEPTH:
        return
    for route, node in expand(routes):
        if isinstance(route, Mount):
            here = prefix + str(node.path)
            children = getattr(node, "routes", None) or ()
            if children:
                _add(leaves, route, None)  # the app inside decides (or nothing matched)
                _collect(children, here, depth + 1, leaves)
            else:
                _add(leaves, route, here + "/{path:path}")
        elif isinstance(route, Host):
            _add(leaves, route, None)
            _collect(getattr(node, "routes", None) or (), prefix, depth + 1, leaves)
        else:
            path = getattr(node, "path", None)
            _add(leaves, route, prefix + path if isinstance(path, str) else None)


def _walk(routes: Iterable[Any], scope: Scope, prefix: str, depth: int) -> str | None:
    """The template of the route ``scope`` matches under ``routes`` (as Starlette's
    router picks it: the first full match, else the first partial one)."""
    if depth > MAX_DEPTH:
        return None
    partial: tuple[Any, Any, Scope] | None = None
    for route, node in expand(routes):
        match, child = node.matches(scope)
        if match is Match.FULL:
            return _inside(route, node, {**scope, **child}, prefix, depth)
        if match is Match.PARTIAL and partial is None:
            partial = (route, node, child)
    if partial is not None:
        route, node, child = partial
        return _inside(route, node, {**scope, **child}, prefix, depth)
    return None


def _inside(route: Any, node: Any, scope: Scope, prefix: str, depth: int) -> str | None:
    if isinstance(route, Mount):
        here = prefix + str(node.path)
        children = getattr(node, "routes", None) or ()
        return _walk(children, scope, here, depth + 1) if children else here + "/{path:path}"
    if isinstance(route, Host):
        return _walk(getattr(node, "routes", None) or (), scope, prefix, depth + 1)
    path = getattr(node, "path", None)
    return prefix + path if isinstance(path, str) else None


#: Route resolvers of the outermost routers seen in scopes (``scope["router"]``) by a
#: middleware that was not given its app's (``app.add_middleware(ObskitMiddleware)``).
_by_router: dict[int, Routes] = {}
_BY_ROUTER_MAX = 64


def route_of(app: Any, scope: Scope) -> str | None:
    """The route template of a request answered by ``app``, or by the Starlette app the
    scope says routed it (``scope["router"]``: its outermost router); None: unknown."""
    router = getattr(app, "router", None) if isinstance(app, Starlette) else None
    if router is None:
        router = scope.get("router")
        if router is None or not hasattr(router, "routes"):
            return None
    routes = _by_router.get(id(router))
    if routes is None or routes._router() is not router:
        routes = Routes(router)
        if len(_by_router) >= _BY_ROUTER_MAX:
            _by_router.clear()
        _by_router[id(router)] = routes
    return routes(scope)


_asgi.framework_route = route_of


class _Middleware(ObskitMiddleware):
    """obskit's middleware around one Starlette app: the app's routes name requests."""

    def __init__(self, app: Any, call: Any, route: RouteOf | None) -> None:
        super().__init__(call, route or Routes(app.router))


#: Original class -> its instrumented subclass.
_subclasses: dict[type, type] = {}


async def _instrumented_call(self: Any, scope: Scope, receive: Any, send: Any) -> None:
    """The instrumented app's ``__call__``: obskit's middleware, then the app's own."""
    await self.__dict__[_MIDDLEWARE](scope, receive, send)


def _subclass(cls: type) -> type:
    sub = _subclasses.get(cls)
    if sub is None:
        sub = types.new_class(cls.__name__, (cls,), {})
        sub.__module__ = cls.__module__
        sub.__qualname__ = cls.__qualname__
        sub.__doc__ = cls.__doc__
        sub.__call__ = _instrumented_call  # type: ignore[method-assign]
        sub.obskit_instrumented = True  # type: ignore[attr-defined]
        _subclasses[cls] = sub
    return sub


def instrument(app: Any, route: RouteOf | None = None) -> Any:
    """Instrument the Starlette (or FastAPI) ``app`` in place; return it (see the module).

    Again on the same app: nothing more (a ``route`` given then replaces the one before).
    """
    cls = type(app)
    if getattr(cls, "obskit_instrumented", False):
        if route is not None:
            app.__dict__[_MIDDLEWARE].route = route
        return app
    original = types.MethodType(cls.__call__, app)
    app.__dict__[_MIDDLEWARE] = _Middleware(app, original, route)
    app.__class__ = _subclass(cls)
    return app
