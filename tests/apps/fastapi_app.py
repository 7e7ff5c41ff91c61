"""A FastAPI app for the ASGI tests: routers with prefixes, path parameters, a
dependency, a mounted sub-app, a streaming response, a WebSocket, background tasks, an
asyncio task, sync (threadpool) and async endpoints.

In-process: ``create_app()`` (the test calls ``obskit.init()``). Under a real server:
``tests.apps.fastapi_app:app`` or ``tests.apps.fastapi_app:served()`` initialise obskit
from the environment, as a deployment does, and instrument the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect

import obskit

log = obskit.get_logger("tests.apps.fastapi_app")

#: Set by the streaming endpoint when its generator was stopped (the client went away).
stopped_streams: list[int] = []
#: asyncio tasks a handler started, kept until they finish (the event loop holds weak refs).
_tasks: set[asyncio.Task[None]] = set()


@obskit.traced
def load_item(item_id: int) -> dict[str, object]:
    """A traced "database" call: a child span of the request's span."""
    log.info("loading item", item_id=item_id)
    return {"id": item_id, "name": f"item {item_id}"}


async def request_id(x_request_id: Annotated[str | None, Header()] = None) -> str | None:
    """A dependency: binds the caller's request id to the request's log lines (async: it
    runs in the request's task, so the binding holds for the endpoint and the access line)."""
    if x_request_id:
        obskit.bind(request_id=x_request_id)
    return x_request_id


def audit(item_id: int, request_id: str | None) -> None:
    """A background task (sync: run in the threadpool after the response)."""
    log.info("audit written", item_id=item_id, request_id=request_id)


async def notify(item_id: int) -> None:
    """An async background task."""
    await asyncio.sleep(0)
    log.info("notification sent", item_id=item_id)


async def side_job(n: int) -> None:
    """An asyncio task a handler starts and does not wait for."""
    await asyncio.sleep(0.01)
    log.info("side job done", n=n)


def create_app() -> FastAPI:
    """The app, not instrumented (the tests call ``obskit.instrument_asgi``)."""
    app = FastAPI()
    items = APIRouter(prefix="/items", tags=["items"])
    api = APIRouter(prefix="/api")
    v1 = APIRouter(prefix="/v1")

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    @items.get("/{item_id}")
    async def read_item(
        item_id: int, rid: Annotated[str | None, Depends(request_id)]
    ) -> dict[str, object]:
        log.info("reading item", item_id=item_id)
        return load_item(item_id)

    @items.get("/{item_id}/sync")
    def read_item_sync(
        item_id: int, rid: Annotated[str | None, Depends(request_id)]
    ) -> dict[str, object]:
        log.info("reading item in a thread", item_id=item_id)
        time.sleep(0.001)
        return load_item(item_id)

    @items.post("/{item_id}/audit")
    async def audited(
        item_id: int,
        background: BackgroundTasks,
        rid: Annotated[str | None, Depends(request_id)],
    ) -> dict[str, object]:
        background.add_task(audit, item_id, rid)
        background.add_task(notify, item_id)
        task = asyncio.create_task(side_job(item_id))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        log.info("audit queued", item_id=item_id)
        return {"queued": item_id}

    @v1.get("/things/{thing_id}")
    async def read_thing(thing_id: str) -> dict[str, str]:
        return {"thing": thing_id}

    api.include_router(v1)

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("the example failure")

    @app.get("/fail-sync")
    def fail_sync() -> None:
        raise ValueError("the sync failure")

    @app.get("/unavailable")
    async def unavailable() -> PlainTextResponse:
        return PlainTextResponse("try later", status_code=503)

    @app.get("/stream")
    async def stream(chunks: int = 3, pause: float = 0.01) -> StreamingResponse:
        async def generate() -> AsyncIterator[str]:
            sent = 0
            try:
                for n in range(chunks):
                    log.info("streaming chunk", n=n)
                    await asyncio.sleep(pause)
                    yield f"chunk {n}\n"
                    sent += 1
            finally:
                if sent < chunks:
                    stopped_streams.append(sent)

        return StreamingResponse(generate(), media_type="text/plain")

    @app.websocket("/ws/{room}")
    async def chat(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        log.info("joined", room=room)
        try:
            while True:
                text = await websocket.receive_text()
                log.info("message", room=room, text=text)
                if text == "boom":
                    raise RuntimeError("the websocket failure")
                await websocket.send_text(f"{room}: {text}")
        except WebSocketDisconnect:
            log.info("left", room=room)
            raise

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(items)
    app.include_router(api)

    admin = FastAPI()

    @admin.get("/users/{user_id}")
    async def admin_user(user_id: int) -> dict[str, int]:
        log.info("admin user", user_id=user_id)
        return {"user": user_id}

    app.mount("/admin", admin)
    return app


def served() -> FastAPI:
    """The app as a server runs it: obskit from the environment, the app instrumented."""
    obskit.init(service_name="fastapi-example")
    return obskit.instrument_asgi(create_app())
