"""The route of a request still running, as dumps and profiles name it, for Django and
ASGI apps (Flask's is covered with gunicorn in test_dumps_gunicorn.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._dumps import active_spans
from obskit._dumps.dump_lines import span_fields
from tests.django_setup import setup_django

setup_django()

from django.test import Client  # noqa: E402

from tests.djangoproj.catalog import views  # noqa: E402


def _request_fields() -> list[dict[str, Any]]:
    """The dump fields of every running request (what a dump line carries)."""
    entries = active_spans.snapshot()
    now = time.perf_counter()
    return [span_fields(entry, entries, now) for entry in entries if entry[2] is not None]


def test_a_dump_names_the_route_of_a_django_request_still_in_its_view(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """A Django view still running: its dump fields carry the resolved route template
    and a name made of it, before the request ends."""
    spans(service_name="django-routes")
    views.WAITING.clear()
    views.RELEASE.clear()
    answers: list[int] = []
    thread = threading.Thread(
        target=lambda: answers.append(Client().get("/catalog/wait/7").status_code)
    )
    thread.start()
    try:
        assert views.WAITING.wait(10)
        (fields,) = _request_fields()
    finally:
        views.RELEASE.set()
        thread.join(10)
    assert fields["http.route"] == "catalog/wait/<int:pk>"
    assert fields["span.name"] == "GET catalog/wait/<int:pk>"
    assert answers == [200]


@pytest.mark.parametrize(("method", "named"), [("GET", "GET"), ("PURGE", "HTTP")])
def test_a_dump_names_the_route_of_a_fastapi_request_still_in_its_endpoint(
    method: str, named: str
) -> None:
    """A FastAPI endpoint under a prefixed router still running: its dump fields carry
    the route template with the prefix; a method outside the standard ones is named
    ``HTTP``, as its span will be."""
    obskit.init(service_name="asgi-routes", metrics_port=0)
    waiting, release = threading.Event(), threading.Event()
    router = APIRouter(prefix="/shop")

    @router.api_route("/items/{item_id}", methods=["GET", "PURGE"])
    async def item(item_id: int) -> dict[str, int]:
        waiting.set()
        release.wait(10)  # (blocks this test's loop thread: nothing else runs on it)
        return {"item": item_id}

    app = FastAPI()
    app.include_router(router)
    obskit.instrument_asgi(app)
    answers: list[int] = []

    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers.append((await client.request(method, "/shop/items/3")).status_code)

    thread = threading.Thread(target=lambda: asyncio.run(call()))
    thread.start()
    try:
        assert waiting.wait(10)
        (fields,) = _request_fields()
    finally:
        release.set()
        thread.join(10)
        obskit.shutdown()
    assert fields["http.route"] == "/shop/items/{item_id}"
    assert fields["span.name"] == f"{named} /shop/items/{{item_id}}"
    assert fields["http.request.method"] == ("_OTHER" if named == "HTTP" else method)
    assert answers == [200]
