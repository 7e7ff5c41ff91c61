"""One driver per HTTP client library obskit instruments, so a test runs the same calls
through each: a GET (status and body as the caller sees them), a streamed GET, a POST of
a body produced piece by piece. Async libraries run each call in ``asyncio.run``."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.http_origin import CHUNK, Origin, serve

#: Called by a streamed GET once the response's headers are in, before its body is read.
Between = Callable[[], None]


class Driver:
    """Calls made through one library (``name``: its instrumentation's name)."""

    name = ""
    module = ""
    #: Instrumented libraries it sends its requests through.
    beneath: tuple[str, ...] = ()

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """GET ``url``, following redirects; (status, body). A status of 400 or more is
        returned, not raised."""
        raise NotImplementedError

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        """GET ``url`` streamed: ``between()`` once the headers are in, then the body read
        ``CHUNK`` bytes at a time; (status, bytes read)."""
        raise NotImplementedError

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        """POST a body sent as ``pieces`` come; the status."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Requests(Driver):
    name = module = "requests"
    beneath = ("urllib3",)

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import requests

        response = requests.get(url, timeout=timeout, headers=headers)
        return response.status_code, response.content

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import requests

        with requests.get(url, stream=True, timeout=30) as response:
            between()
            return response.status_code, sum(map(len, response.iter_content(CHUNK)))

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import requests

        return requests.post(url, data=iter(pieces), timeout=30).status_code


class Httpx(Driver):
    name = module = "httpx"

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import httpx

        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            response = client.get(url, headers=headers)
            return response.status_code, response.content

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import httpx

        with httpx.Client(timeout=30) as client, client.stream("GET", url) as response:
            between()
            return response.status_code, sum(map(len, response.iter_bytes(CHUNK)))

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import httpx

        with httpx.Client(timeout=30) as client:
            return client.post(url, content=iter(pieces)).status_code


async def _pieces(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class HttpxAsync(Driver):
    name = "httpx"
    module = "httpx"

    def __repr__(self) -> str:
        return "httpx-async"

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import httpx

        async def call() -> tuple[int, bytes]:
            async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client:
                response = await client.get(url, headers=headers)
                return response.status_code, response.content

        return asyncio.run(call())

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import httpx

        async def call() -> tuple[int, int]:
            async with (
                httpx.AsyncClient(timeout=30) as client,
                client.stream("GET", url) as response,
            ):
                between()
                read = 0
                async for block in response.aiter_bytes(CHUNK):
                    read += len(block)
                return response.status_code, read

        return asyncio.run(call())

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import httpx

        async def call() -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                return (await client.post(url, content=_pieces(pieces))).status_code

        return asyncio.run(call())


class Urllib3(Driver):
    name = module = "urllib3"

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import urllib3

        with urllib3.PoolManager() as pool:
            response = pool.request("GET", url, headers=headers, timeout=timeout)
            return response.status, response.data

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import urllib3

        with urllib3.PoolManager() as pool:
            response = pool.request("GET", url, preload_content=False, timeout=30)
            between()
            read = sum(map(len, response.stream(CHUNK)))
            response.release_conn()
            return response.status, read

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import urllib3

        with urllib3.PoolManager() as pool:
            return pool.request("POST", url, body=iter(pieces), chunked=True, timeout=30).status


class Urllib(Driver):
    name = "urllib"
    module = "urllib.request"

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            if error.code < 400:  # (a redirect loop is raised as one)
                raise
            with error:
                return error.code, error.read()

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as response:
            between()
            read = 0
            for _ in range(100_000):
                block = response.read(CHUNK)
                if not block:
                    break
                read += len(block)
            return response.status, read

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import urllib.request

        request = urllib.request.Request(
            url, data=iter(pieces), headers={"Transfer-Encoding": "chunked"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)


class Aiohttp(Driver):
    name = "aiohttp-client"
    module = "aiohttp"

    def get(
        self, url: str, timeout: float | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        import aiohttp

        async def call() -> tuple[int, bytes]:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.get(url, headers=headers) as response,
            ):
                return response.status, await response.read()

        return asyncio.run(call())

    def stream(self, url: str, between: Between) -> tuple[int, int]:
        import aiohttp

        async def call() -> tuple[int, int]:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                between()
                read = 0
                async for block in response.content.iter_chunked(CHUNK):
                    read += len(block)
                return response.status, read

        return asyncio.run(call())

    def post(self, url: str, pieces: Iterable[bytes]) -> int:
        import aiohttp

        async def call() -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=_pieces(pieces)) as response,
            ):
                return response.status

        return asyncio.run(call())


DRIVERS: tuple[Driver, ...] = (Requests(), Httpx(), HttpxAsync(), Urllib3(), Urllib(), Aiohttp())


def available(driver: Driver) -> Driver:
    """``driver``, or the test skipped when its library is not installed."""
    pytest.importorskip(driver.module)
    return driver


def imported(driver: Driver) -> Any:
    """The driver's library module."""
    return importlib.import_module(driver.module)


# -- fixtures (this module is a pytest plugin: tests/conftest.py lists it) --


@pytest.fixture
def origin() -> Iterator[Origin]:
    """The test origin server (tests/http_origin.py) on 127.0.0.1."""
    yield from serve()


@pytest.fixture(params=DRIVERS, ids=repr)
def driver(request: pytest.FixtureRequest) -> Driver:
    """Each HTTP client driver in turn (skipped where its library is absent)."""
    return available(request.param)


def client_spans(exporter: InMemorySpanExporter) -> list[Any]:
    """The CLIENT spans ``exporter`` received."""
    return [span for span in exporter.get_finished_spans() if span.kind == SpanKind.CLIENT]
