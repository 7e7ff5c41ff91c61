"""``@obskit.traced`` and ``obskit.span()``: a span and a latency histogram per call.

The wrapper is chosen once, at decoration time, for the function's kind (sync,
coroutine, generator, async generator); methods, classmethods and staticmethods are
handled by wrapt. Each decorated function keeps a :class:`_Site` with everything
that does not change between calls (span name, attributes, histogram children),
refreshed only when ``init()`` installs a new runtime — so a call does the
minimum: start a span, make it current, call, observe, end.

Generators are driven step by step with the span current only *while the
generator body runs* — including its ``finally`` when it is closed early or
garbage-collected: the consumer's code between items never sees it, and the
context is detached in the same context it was attached in (no "Failed to detach
context" errors when a generator is closed early or abandoned).

Outcomes: a call that returns (or a generator closed by its consumer, which raises
``GeneratorExit`` in it) is ``ok``; one cancelled by asyncio (``CancelledError``
escaping it) is ``cancelled``: not an error for the cancelled code, so the span's
status stays UNSET, no exception event is added and the span gets
``obskit.cancelled=true``; any other exception is ``error`` (status ERROR, an
``exception`` event). The exception propagates unchanged in every case.
"""

from __future__ import annotations

import inspect
import time
from asyncio import CancelledError
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import wrapt
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    Status,
    StatusCode,
)
from opentelemetry.util.types import AttributeValue

from obskit._dumps.active_spans import enter as _enter
from obskit._dumps.active_spans import enter_task as _enter_task
from obskit._dumps.active_spans import leave as _leave
from obskit._fast.histogram import observe as _observe_plain
from obskit._fast.spans import SpanStarter, end_span
from obskit._fast.spans import attach as _attach
from obskit._fast.spans import detach as _detach
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime
from obskit._metrics.registry import exemplar_of, observe_trusted

P = ParamSpec("P")
R = TypeVar("R")

_perf_counter = time.perf_counter
_set_span = trace.set_span_in_context
_observe = observe_trusted
_NOTHING = (None, None)

#: The span attribute that marks a call or block ended by asyncio cancellation.
CANCELLED_ATTRIBUTE = "obskit.cancelled"


class _Site:
    """One decorated function: its static facts and the runtime handles it uses."""

    __slots__ = (
        "attributes",
        "cancelled_child",
        "error_child",
        "function",
        "histogram",
        "ok_child",
        "on",
        "record_exception",
        "span",
        "span_name",
        "starter",
        "telemetry",
        "tracer",
    )

    def __init__(
        self,
        function: str,
        span_name: str,
        attributes: dict[str, AttributeValue],
        record_exception: bool,
        span: bool,
        histogram: bool,
    ) -> None:
        self.function = function
        self.span_name = span_name
        self.attributes = attributes
        self.record_exception = record_exception
        self.span = span
        self.histogram = histogram
        self.telemetry: Any = None
        self.tracer: trace.Tracer | None = None
        self.ok_child: Any = None
        self.error_child: Any = None
        #: ``outcome="cancelled"``, made at the first cancelled call (most functions
        #: are never cancelled: no empty series for them).
        self.cancelled_child: Any = None
        #: Starts and ends this function's spans on the current tracer (None: no spans).
        self.starter: SpanStarter | None = None
        self.on = False

    def active(self) -> bool:
        """Whether calls must be traced: refreshes cached handles if ``init()`` ran since.

        Wrappers inline the steady-state check (``_runtime._current is site.telemetry``
        and ``site.on``) and call this only when the runtime changed.
        """
        telemetry = _runtime._current
        if telemetry is not self.telemetry:
            self.telemetry = telemetry
            self.starter = None
            self.cancelled_child = None
            if telemetry is None or telemetry.tracer is None:
                self.tracer = self.ok_child = self.error_child = None
            else:
                histogram: Any = telemetry.function_histogram
                self.tracer = telemetry.tracer if self.span else None
                if self.histogram:
                    self.ok_child = histogram.labels(self.function, "ok")
                    self.error_child = histogram.labels(self.function, "error")
                if self.tracer is not None:
                    self.starter = SpanStarter(
                        self.tracer,
                        self.span_name,
                        self.attributes,
                        telemetry.settings.traces_sampler.startswith("parentbased_"),
                    )
            self.on = self.tracer is not None or self.ok_child is not None
        return self.on

    def open(self) -> tuple[Span | None, Any]:
        """Start the call's span and make it current: (span, token to detach).

        Only called when spans are on. Never raises: an internal error is reported and
        the call runs without a span, ``(None, None)``.
        """
        try:
            assert self.starter is not None
            return self.starter.open()
        except Exception as error:
            _internal_errors.report("traced", error)
            return None, None

    def start(self) -> tuple[Span | None, Any]:
        """Start the call's span (if spans are on); return it and a context holding it.

        For generators, whose span is made current once per step. Never raises: an
        internal error is reported and the call runs without a span.
        """
        try:
            if self.starter is None:
                return None, None
            span = self.starter.start()
            return span, _set_span(span)
        except Exception as error:
            _internal_errors.report("traced", error)
            return None, None

    def finish(self, span: Span | None, started: float, error: BaseException | None) -> None:
        """Record the outcome on the span and the histogram, then end the span."""
        elapsed = _perf_counter() - started
        if error is None and type(span) is NonRecordingSpan:
            # An unsampled call that returned: no status, no exemplar, no end() to call.
            child = self.ok_child
            if child is not None:
                try:
                    _observe_plain(child, elapsed, None)
                except Exception as internal:
                    _internal_errors.report("traced", internal)
            return
        try:
            if error is None or isinstance(error, GeneratorExit):  # closed by its consumer
                child = self.ok_child
            elif isinstance(error, CancelledError):
                child = self._cancelled_child()
                if span is not None:
                    span.set_attribute(CANCELLED_ATTRIBUTE, True)
            else:
                child = self.error_child
                if span is not None and not span.is_recording():
                    span = None  # ended meanwhile (a worker timeout's report ends it)
                if span is not None:
                    if self.record_exception:
                        span.record_exception(error, escaped=True)
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            if child is not None:
                # The exemplar is built here and always fits: skip ObskitHistogram's check.
                # A non-recording span is never sampled: no exemplar to look for.
                exemplar = (
                    None if span is None or type(span) is NonRecordingSpan else exemplar_of(span)
                )
                if exemplar is None:  # observe_trusted's own first step, one call less
                    _observe_plain(child, elapsed, None)
                else:
                    _observe(child, elapsed, exemplar)
        except Exception as internal:
            _internal_errors.report("traced", internal)
        if span is not None and type(span) is not NonRecordingSpan:  # whose end() is a no-op
            try:
                end_span(span)
            except Exception as internal:
                _internal_errors.report("traced", internal)

    def _cancelled_child(self) -> Any:
        """The ``outcome="cancelled"`` histogram child (None with the histogram off)."""
        child = self.cancelled_child
        if child is None and self.ok_child is not None:
            histogram: Any = self.telemetry.function_histogram
            child = self.cancelled_child = histogram.labels(self.function, "cancelled")
        return child


def _sync_wrapper(site: _Site) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not (site.on if _runtime._current is site.telemetry else site.active()):
            return wrapped(*args, **kwargs)
        span, token = site.open() if site.tracer is not None else _NOTHING
        started = _perf_counter()
        entry = _enter(span, site.span_name, started)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            site.finish(span, started, error)
            raise
        finally:
            if token is not None:
                _detach(token)
            _leave(entry, None)
        site.finish(span, started, None)
        return result

    return wrapper


def _async_wrapper(site: _Site) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not (site.on if _runtime._current is site.telemetry else site.active()):
            return await wrapped(*args, **kwargs)
        return await _traced_coroutine(site, wrapped, args, kwargs)

    return wrapper


def _generator_wrapper(site: _Site) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not site.active():
            return wrapped(*args, **kwargs)
        return _drive(site, wrapped(*args, **kwargs))

    return wrapper


def _drive(site: _Site, generator: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    span, context = site.start()
    started = _perf_counter()
    error: BaseException | None = None
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            token = _attach(context) if span is not None else None
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = generator.throw(thrown)
                else:
                    item = generator.send(to_send)
            except StopIteration as stop:
                return stop.value
            finally:
                if token is not None:
                    _detach(token)
            try:
                to_send = yield item
            except GeneratorExit:  # closed early or garbage-collected: its finally runs now
                token = _attach(context) if span is not None else None
                try:
                    generator.close()
                finally:
                    if token is not None:
                        _detach(token)
                raise
            except BaseException as thrown:  # consumer's .throw(): pass it into the body
                to_throw, to_send = thrown, None
    except BaseException as raised:
        error = raised
        raise
    finally:
        site.finish(span, started, error)


def _async_generator_wrapper(site: _Site) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not site.active():
            return wrapped(*args, **kwargs)
        return _adrive(site, wrapped(*args, **kwargs))

    return wrapper


async def _adrive(site: _Site, generator: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    span, context = site.start()
    started = _perf_counter()
    error: BaseException | None = None
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            token = _attach(context) if span is not None else None
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = await generator.athrow(thrown)
                else:
                    item = await generator.asend(to_send)
            except StopAsyncIteration:
                return
            finally:
                if token is not None:
                    _detach(token)
            try:
                to_send = yield item
            except GeneratorExit:  # closed early or garbage-collected: its finally runs now
                token = _attach(context) if span is not None else None
                try:
                    await generator.aclose()
                finally:
                    if token is not None:
                        _detach(token)
                raise
            except BaseException as thrown:
                to_throw, to_send = thrown, None
    except BaseException as raised:
        error = raised
        raise
    finally:
        site.finish(span, started, error)


def _site_for(
    fn: Any,
    name: str | None,
    attributes: Mapping[str, AttributeValue] | None,
    record_exception: bool,
    span: bool,
    histogram: bool,
) -> tuple[_Site, Any]:
    function = getattr(fn, "__func__", fn)  # classmethod / staticmethod objects
    qualified = f"{function.__module__}.{function.__qualname__}"
    code = getattr(function, "__code__", None)
    static: dict[str, AttributeValue] = {"code.function.name": qualified}
    if code is not None:
        static["code.file.path"] = code.co_filename
        static["code.line.number"] = code.co_firstlineno
    static.update(_internal_errors.safe_attributes(attributes or {}))  # checked once, not per call
    site = _Site(qualified, name or qualified, static, record_exception, span, histogram)
    return site, function


if TYPE_CHECKING:
    _WrapperBase = wrapt.FunctionWrapper[Any, Any]
else:  # wrapt's stubs are generic; the runtime class is not subscriptable
    _WrapperBase = wrapt.FunctionWrapper


class _FunctionWrapper(_WrapperBase):
    """wrapt's FunctionWrapper for a plain function, with a shorter call path.

    Called unbound, wrapt first looks up ``__self__`` on the wrapped object in case it
    is an already-bound method; for a plain function that lookup always fails, and
    raising and catching the AttributeError is most of wrapt's per-call cost. Bound
    calls (the function used as a method) still go through wrapt's own binding.
    When nothing is recorded (before ``init()``, or span and histogram both off) the
    call goes straight to the function, without the wrapper's frame.
    """

    _self_site: _Site
    #: The wrapper function it was made with (wrapt keeps its own copy privately).
    _self_call: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        site = self._self_site
        if not (site.on if _runtime._current is site.telemetry else site.active()):
            return self.__wrapped__(*args, **kwargs)
        wrapper = self._self_call
        return wrapper(self.__wrapped__, None, args, kwargs)


class _SyncFunctionWrapper(_FunctionWrapper):
    """:class:`_FunctionWrapper` for a plain sync function: the traced call inline.

    The same steps as :func:`_sync_wrapper`'s wrapper, one Python frame fewer.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        site = self._self_site
        if not (site.on if _runtime._current is site.telemetry else site.active()):
            return self.__wrapped__(*args, **kwargs)
        if site.tracer is None:  # histogram only: time the call, observe, nothing else
            started = _perf_counter()
            try:
                result = self.__wrapped__(*args, **kwargs)
            except BaseException as error:
                site.finish(None, started, error)
                raise
            elapsed = _perf_counter() - started
            try:
                _observe_plain(site.ok_child, elapsed, None)
            except Exception as internal:
                _internal_errors.report("traced", internal)
            return result
        span, token = site.open()
        started = _perf_counter()
        entry = _enter(span, site.span_name, started)
        try:
            result = self.__wrapped__(*args, **kwargs)
        except BaseException as error:
            site.finish(span, started, error)
            raise
        finally:
            if token is not None:
                _detach(token)
            _leave(entry, None)
        site.finish(span, started, None)
        return result


class _AsyncFunctionWrapper(_FunctionWrapper):
    """:class:`_FunctionWrapper` for a plain ``async def`` function.

    Checks once, at call time, whether to record; the coroutine it returns is the
    same as :func:`_async_wrapper`'s minus that check.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        site = self._self_site
        if not (site.on if _runtime._current is site.telemetry else site.active()):
            return self.__wrapped__(*args, **kwargs)
        return _traced_coroutine(site, self.__wrapped__, args, kwargs)


async def _traced_coroutine(
    site: _Site, wrapped: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    """The traced await of ``wrapped(*args, **kwargs)``: for plain coroutine functions
    (returned by the proxy's ``__call__``) and, from :func:`_async_wrapper`, methods."""
    span, token = site.open() if site.tracer is not None else _NOTHING
    started = _perf_counter()
    entry = _enter_task(span, site.span_name, started)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as error:
        site.finish(span, started, error)
        raise
    finally:
        if token is not None:
            _detach(token)
        _leave(entry, None)
    site.finish(span, started, None)
    return result


class _PassThrough(_FunctionWrapper):
    """:class:`_FunctionWrapper` for ``traced(span=False, histogram=False)``: nothing to record.

    With both off no runtime can turn recording on, so a call goes straight to the
    function (bound calls still take wrapt's path, whose wrapper finds it off too).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


def traced(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    record_exception: bool = True,
    span: bool = True,
    histogram: bool = True,
) -> Any:
    """Give each call of the decorated function a span and a latency observation.

    Usable bare (``@traced``) or with options (``@traced(name=...)``), on functions,
    ``async def`` functions, generators, async generators, methods, classmethods and
    staticmethods. The span is named ``module.qualname`` unless ``name`` is given;
    the histogram is ``obskit_function_duration_seconds{function, outcome}`` with a
    ``trace_id`` exemplar when the call's span is sampled. Before ``init()`` (and
    after ``shutdown()``) the function runs untouched. Exceptions are recorded
    (span status ERROR, ``outcome="error"``) and re-raised unchanged; asyncio's
    ``CancelledError`` is ``outcome="cancelled"`` (span status UNSET, attribute
    ``obskit.cancelled=true``) and re-raised unchanged.

    Args:
        name: Span name; default ``module.qualname``.
        attributes: Static span attributes added to every call's span.
        record_exception: Add an exception event to the span when the call raises.
        span: Make a span (``False``: histogram only).
        histogram: Observe the call's duration (``False``: span only).
    """

    def decorate(target: Any) -> Any:
        site, function = _site_for(target, name, attributes, record_exception, span, histogram)
        proxy_class: type[_FunctionWrapper] = _FunctionWrapper
        if inspect.isasyncgenfunction(function):
            wrapper = _async_generator_wrapper(site)
        elif inspect.iscoroutinefunction(function):
            wrapper = _async_wrapper(site)
            proxy_class = _AsyncFunctionWrapper
        elif inspect.isgeneratorfunction(function):
            wrapper = _generator_wrapper(site)
        else:
            wrapper = _sync_wrapper(site)
            proxy_class = _SyncFunctionWrapper
        if inspect.isfunction(target):
            proxy = (proxy_class if span or histogram else _PassThrough)(target, wrapper)
            proxy._self_site = site
            proxy._self_call = wrapper
            return proxy
        return wrapt.FunctionWrapper(target, wrapper)

    if fn is not None:
        return decorate(fn)
    return decorate


#: Types of the attribute values every supported OpenTelemetry SDK stores (or refuses)
#: alike; lists and tuples of them are checked item by item.
_PLAIN_TYPES = frozenset({str, bool, int, float, bytes, type(None)})


def _as_attribute_values(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` with every value that is neither a primitive nor a list or tuple of
    primitives replaced by its text (cut to ``REPR_LIMIT`` characters).

    obskit does it itself so that a span holds the same on every SDK it supports:
    OpenTelemetry 1.27 drops such values (with a warning), newer SDKs keep mappings and
    call ``str()`` on the rest. A value whose ``str()`` raises is an internal error
    (raised in strict mode) and is recorded as ``"<unrepresentable TYPE>"``.
    """
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if type(value) in _PLAIN_TYPES or _primitives(value):
            cleaned[key] = value
            continue
        try:
            text = str(value)
        except Exception as error:
            _internal_errors.report("span", error)
            text = _internal_errors.safe_text(value)
        cleaned[key] = text[: _internal_errors.REPR_LIMIT]
    return cleaned


def _primitives(value: object) -> bool:
    """Whether ``value`` is a primitive (a subclass too) or a list/tuple of primitives."""
    if isinstance(value, (str, bool, int, float, bytes)):
        return True
    return isinstance(value, (list, tuple)) and all(
        item is None or isinstance(item, (str, bool, int, float, bytes)) for item in value
    )


class span:
    """A manual span: ``with obskit.span("load-cart", cart_id=7) as s:`` (or ``async with``).

    Yields the OpenTelemetry span, current for the block; an exception escaping the
    block is recorded and sets status ERROR, then propagates unchanged (asyncio's
    ``CancelledError`` sets ``obskit.cancelled=true`` instead: not an error). An
    attribute value of a type span attributes do not have (a mapping, any other object)
    is recorded as its text, as ``@traced(attributes=...)`` records it. As a
    decorator (``@obskit.span("name")``) it traces each call without a histogram.
    Before ``init()`` it yields a non-recording span. Make a new one per block.
    """

    def __init__(self, name: str, /, **attributes: AttributeValue) -> None:
        self.name = name
        for value in attributes.values():
            if type(value) not in _PLAIN_TYPES:
                attributes = _as_attribute_values(attributes)
                break
        self.attributes = attributes
        self._span: Span | None = None
        self._token: object = None
        self._entry = 0  # (its key in the registry of running spans)

    def __enter__(self) -> Span:
        return self._start(_enter)

    def _start(self, enter: Callable[[Any, str, float], int]) -> Span:
        telemetry = _runtime._current
        if telemetry is None or telemetry.tracer is None:
            return trace.INVALID_SPAN
        try:
            return self._open(telemetry.tracer, enter)
        except Exception as error:
            _internal_errors.report("span", error)
        # Most likely a hostile attribute value (raising __str__, a cyclic dict): keep
        # the span, with such values as their text.
        self.attributes = _internal_errors.safe_attributes(self.attributes)
        try:
            return self._open(telemetry.tracer, enter)
        except Exception as error:
            _internal_errors.report("span", error)
            self._span = None
            return trace.INVALID_SPAN

    def _open(self, tracer: Any, enter: Callable[[Any, str, float], int]) -> Span:
        self._span, self._token = SpanStarter(
            tracer, self.name, self.attributes, False, reused=False
        ).open()
        self._entry = enter(self._span, self.name, _perf_counter())
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        current, self._span = self._span, None
        if current is None:
            return
        try:
            if error is None or isinstance(error, GeneratorExit):
                pass
            elif isinstance(error, CancelledError):  # not an error for the cancelled block
                current.set_attribute(CANCELLED_ATTRIBUTE, True)
            elif current.is_recording():  # (a worker timeout's report may have ended it)
                current.record_exception(error, escaped=True)
                current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            else:
                return
            end_span(current)
        except Exception as internal:
            _internal_errors.report("span", internal)
        finally:
            _detach(self._token)
            _leave(self._entry, None)
            self._entry = 0

    async def __aenter__(self) -> Span:
        return self._start(_enter_task)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        decorated: Callable[P, R] = traced(
            name=self.name, attributes=self.attributes, histogram=False
        )(fn)
        return decorated
