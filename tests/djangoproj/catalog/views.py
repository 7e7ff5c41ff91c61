"""Views of the test project: function, class-based, async, failing and streaming."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import DetailView

import obskit
from tests.djangoproj.catalog.models import Author, Book
from tests.reliability.canaries import SESSION_CANARY

log = obskit.get_logger(__name__)


@obskit.traced
def shelf(limit: int) -> list[Book]:
    return list(Book.objects.select_related("author").order_by("id")[:limit])


def book_list(request: HttpRequest) -> HttpResponse:
    request_id = request.GET.get("request_id")
    if request_id:
        obskit.bind(request_id=request_id)
    log.info("listing books")
    return render(request, "catalog/book_list.html", {"books": shelf(50)})


class BookDetail(DetailView):  # type: ignore[type-arg]
    model = Book
    template_name = "catalog/book_detail.html"


@csrf_exempt
def create_book(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    author, _ = Author.objects.get_or_create(name=request.POST.get("author", "Anon"))
    book = Book.objects.create(
        title=request.POST.get("title", "Untitled"),
        author=author,
        year=int(request.POST.get("year", 2000)),
    )
    log.info("book created", book_id=book.pk)
    return JsonResponse({"id": book.pk}, status=201)


async def async_ping(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    request_id = request.GET.get("request_id")
    if request_id:
        obskit.bind(request_id=request_id)
    log.info("async ping")
    count = await Book.objects.acount()
    return JsonResponse({"thread": threading.current_thread().name, "loop": True, "books": count})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the example failure")


def unavailable(request: HttpRequest) -> HttpResponse:
    return HttpResponse("try later", status=503)


#: ``wait``'s view: set when it is running, and what ends it (tests in-process).
WAITING = threading.Event()
RELEASE = threading.Event()


def wait(request: HttpRequest, pk: int) -> HttpResponse:
    """Runs until a test in the same process sets RELEASE (at most 10 s)."""
    WAITING.set()
    RELEASE.wait(10)
    return HttpResponse("released")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[str]:
        for n in range(int(request.GET.get("chunks", "3"))):
            log.info("streaming chunk", n=n)
            time.sleep(float(request.GET.get("pause", "0.05")))
            yield f"chunk {n}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[str]:
        for n in range(3):
            log.info("async chunk", n=n)
            await asyncio.sleep(0.01)
            yield f"chunk {n}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def login(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("logged in")
    response.set_cookie("session", SESSION_CANARY)
    return response


def context(request: HttpRequest) -> JsonResponse:
    """The trace context and baggage the request's server span continues (for the tests)."""
    from opentelemetry import baggage, trace

    span_context = trace.get_current_span().get_span_context()
    return JsonResponse(
        {
            "tracestate": span_context.trace_state.to_header(),
            "baggage": {k: str(v) for k, v in baggage.get_all().items()},
        }
    )


def item(request: HttpRequest, pk: int) -> JsonResponse:
    """A matched route with an id and no database query (the cardinality tests)."""
    return JsonResponse({"id": pk})
