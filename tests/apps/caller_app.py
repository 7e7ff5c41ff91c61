"""Service A of the cross-service tests: a Flask app (``shop``) that writes a book to
``BOOKS_URL`` through the HTTP client library the path names (``/order/<library>``), or
asks ``PRICING_URL`` for a quote and enqueues a Celery task on ``BROKER``
(``/checkout/<title>``)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import urllib.request
from typing import Any

from flask import Flask

import obskit

log = obskit.get_logger(__name__)


def _post_form(library: str, url: str, form: dict[str, str]) -> tuple[int, Any]:
    body = urllib.parse.urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if library == "requests":
        import requests

        reply = requests.post(url, data=form, timeout=10)
        return reply.status_code, reply.json()
    if library == "httpx":
        import httpx

        with httpx.Client(timeout=10) as client:
            answer = client.post(url, data=form)
        return answer.status_code, answer.json()
    if library == "urllib3":
        import urllib3

        got = urllib3.PoolManager().request("POST", url, body=body, headers=headers, timeout=10)
        return got.status, json.loads(got.data)
    if library == "aiohttp":
        import aiohttp

        async def post() -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=form) as response,
            ):
                return response.status, await response.json()

        return asyncio.run(post())
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status, json.loads(reply.read())


def create_app() -> Flask:
    """Service A (``shop``): ``POST /order/<library>`` writes a book to service B."""
    obskit.init(service_name="shop")
    app = obskit.instrument_flask(Flask(__name__))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/order/<library>")
    def order(library: str) -> tuple[dict[str, Any], int]:
        status, answer = _post_form(
            library, f"{os.environ['BOOKS_URL']}/catalog/book/new", {"title": library}
        )
        log.info("ordered", library=library, book=answer.get("id"))
        return {"status": status, "book": answer.get("id")}, 200

    @app.post("/checkout/<title>")
    def checkout(title: str) -> tuple[dict[str, Any], int]:
        import httpx
        from celery import Celery

        reply = httpx.post(f"{os.environ['PRICING_URL']}/quote/{title}", timeout=10)
        tasks = Celery("shop", broker=os.environ["BROKER"])
        sent = tasks.send_task("tests.apps.celery_app.add", args=(2, 3))
        log.info("checked out", title=title, task=sent.id)
        return {"quote": reply.json(), "task": sent.id}, 200

    return app
