"""Service B of the three-service test: a FastAPI app (``pricing``) that stores each quote
as a book in service C (``BOOKS_URL``, the Django project) through httpx."""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI

import obskit

obskit.init(service_name="pricing")
log = obskit.get_logger(__name__)
app = obskit.instrument_asgi(FastAPI())


@app.get("/health")
async def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.post("/quote/{title}")
async def quote(title: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            f"{os.environ['BOOKS_URL']}/catalog/book/new", data={"title": title}
        )
    log.info("quoted", title=title, book=reply.json()["id"])
    return {"book": reply.json()["id"]}
