"""Untrusted callers: what an incoming ``traceparent`` may decide, in each extraction mode.

``trace_context_incoming``: ``continue`` (the caller's trace; its sampled flag honoured
within ``incoming_sampled_per_second``), ``restart`` (a new trace, linked to the
caller's) or ``ignore``. Each test runs the real Flask and Django apps in-process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind

import obskit
from obskit._lifecycle import internal_errors as _internal_errors
from tests.conftest import wsgi_request
from tests.reliability.conftest import Target

FRAMEWORKS = ["flask", "django"]
MODES = ["continue", "restart", "ignore"]
T = "0af7651916cd43dd8448eb211c80319c"
P = "b7ad6b7169203331"


def _traceparent(flags: str) -> str:
    """A valid traceparent with a new random trace id (a caller starting a trace)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}"


def _sampled_replies(made: Target, count: int, flags: str) -> tuple[int, int]:
    """``count`` requests each carrying a new ``traceparent ...-flags``: how many were
    sampled (their ``traceresponse`` says so), and how many server spans were exported."""
    sampled = 0
    for _ in range(count):
        status, headers, _ = wsgi_request(
            made.app, made.context_path, [("traceparent", _traceparent(flags))]
        )
        assert status == 200
        sampled += headers["traceresponse"].endswith("-01")
    exported = [s for s in made.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    made.exporter.clear()
    return sampled, len(exported)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
def test_a_sampled_flag_on_every_request_forces_at_most_the_cap(
    target: Callable[..., Target], framework: str, mode: str
) -> None:
    """With a 1 % sampler and 1,000 requests all carrying ``-01``: ``continue`` samples
    the cap's worth (20 at once, then 20 a second) plus the sampler's 1 %; ``restart`` and
    ``ignore`` sample the sampler's 1 % alone."""
    made = target(
        framework,
        traces_sampler="parentbased_traceidratio",
        traces_sampler_arg=0.01,
        trace_context_incoming=mode,
        incoming_sampled_per_second=20,
    )
    started = time.monotonic()
    sampled, exported = _sampled_replies(made, 1000, "01")
    elapsed = time.monotonic() - started
    assert exported == sampled
    own = 45  # the sampler's own 1 % of 1,000: mean 10, this bound is 11 sd above
    if mode == "continue":
        assert 20 <= sampled <= 20 + 20 * elapsed + 1 + own
    else:
        assert sampled <= own


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
def test_a_not_sampled_flag_hides_requests_only_under_continue(
    target: Callable[..., Target], framework: str, mode: str
) -> None:
    """With the default sampler (everything), 50 requests carrying ``-00`` are all left
    unsampled under ``continue`` (the caller's decision), all sampled under ``restart``
    and ``ignore``."""
    made = target(framework, trace_context_incoming=mode)
    sampled, exported = _sampled_replies(made, 50, "00")
    assert sampled == exported == (0 if mode == "continue" else 50)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
def test_a_caller_chosen_trace_id_is_used_only_under_continue(
    target: Callable[..., Target], framework: str, mode: str
) -> None:
    """A caller's trace id (and tracestate) is continued under ``continue``; under
    ``restart`` the request starts a new trace linked to the caller's span, keeping its
    baggage; under ``ignore`` nothing of the caller's is used, baggage included."""
    made = target(framework, trace_context_incoming=mode)
    reply = made.get(
        [
            ("traceparent", f"00-{T}-{P}-01"),
            ("tracestate", "vendor=chosen"),
            ("baggage", "tenant=acme"),
        ]
    )
    assert reply.status == 200
    body: dict[str, Any] = reply.json()
    links = [
        (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
        for link in reply.span.links
    ]
    if mode == "continue":
        assert (reply.trace_id, reply.parent_id, links) == (T, P, [])
        assert body == {"tracestate": "vendor=chosen", "baggage": {"tenant": "acme"}}
    elif mode == "restart":
        assert reply.trace_id != T
        assert reply.parent_id is None
        assert links == [(T, P)]
        assert reply.span.links[0].context.is_remote
        assert body == {"tracestate": "", "baggage": {"tenant": "acme"}}
    else:
        assert reply.trace_id != T
        assert reply.parent_id is None
        assert links == []
        assert body == {"tracestate": "", "baggage": {}}
    assert reply.headers["traceresponse"].split("-")[1] == reply.trace_id


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_restart_links_a_caller_that_sampled_its_trace_out(
    target: Callable[..., Target], framework: str
) -> None:
    """Under ``restart`` an unsampled caller's span is still linked from the new trace."""
    made = target(framework, trace_context_incoming="restart")
    reply = made.get([("traceparent", f"00-{T}-{P}-00")])
    assert reply.trace_id != T
    (link,) = reply.span.links
    assert (link.context.trace_id, link.context.trace_flags.sampled) == (int(T, 16), False)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
def test_requests_without_context_are_new_roots_in_every_mode(
    target: Callable[..., Target], framework: str, mode: str
) -> None:
    """A request with no trace headers (or an invalid ``traceparent``) starts a new
    unlinked trace in every mode."""
    made = target(framework, trace_context_incoming=mode)
    for headers in ([], [("traceparent", "garbage")]):
        reply = made.get(headers)
        assert reply.parent_id is None
        assert not reply.span.links


def test_the_environment_sets_the_mode_and_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``OBSKIT_TRACE_CONTEXT_INCOMING`` and ``OBSKIT_INCOMING_SAMPLED_PER_SECOND`` configure
    a deployment (an edge service restarts, an internal one continues)."""
    monkeypatch.setenv("OBSKIT_TRACE_CONTEXT_INCOMING", "Restart")
    monkeypatch.setenv("OBSKIT_INCOMING_SAMPLED_PER_SECOND", "2.5")
    settings = obskit.init(service_name="edge", traces_exporter="none").settings
    assert (settings.trace_context_incoming, settings.incoming_sampled_per_second) == (
        "restart",
        2.5,
    )
    assert settings.sources["trace_context_incoming"] == "env OBSKIT_TRACE_CONTEXT_INCOMING"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trace_context_incoming", "trust"),
        ("trace_context_incoming", ""),
        ("trace_context_incoming", 1),
        ("incoming_sampled_per_second", -1),
        ("incoming_sampled_per_second", "many"),
        ("incoming_sampled_per_second", float("nan")),
        ("incoming_sampled_per_second", 2_000_000),
        ("incoming_sampled_per_second", True),
    ],
)
def test_bad_values_fail_init_with_config_error(name: str, value: object) -> None:
    """A bad mode or cap fails ``init()`` with one ConfigError naming the setting."""
    with pytest.raises(obskit.ConfigError) as raised:
        obskit.init(service_name="edge", **{name: value})
    assert raised.value.setting == name
    assert raised.value.source == "argument"


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("OBSKIT_TRACE_CONTEXT_INCOMING", "sometimes"),
        ("OBSKIT_INCOMING_SAMPLED_PER_SECOND", "1e9"),
    ],
)
def test_bad_environment_values_fail_init_with_config_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    """A bad value in the environment fails ``init()`` naming the variable as the source."""
    monkeypatch.setenv(variable, text)
    with pytest.raises(obskit.ConfigError) as raised:
        obskit.init(service_name="edge")
    assert raised.value.source == f"env {variable}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_cap_of_zero_lets_no_flag_force_sampling(
    target: Callable[..., Target], framework: str
) -> None:
    """``incoming_sampled_per_second=0`` under ``continue``: 200 requests carrying ``-01``
    are sampled by the 1 % sampler alone; the continued trace is still the caller's."""
    made = target(
        framework,
        traces_sampler="parentbased_traceidratio",
        traces_sampler_arg=0.01,
        incoming_sampled_per_second=0,
    )
    sampled, exported = _sampled_replies(made, 200, "01")
    assert sampled == exported
    assert sampled <= 15  # mean 2
    status, headers, _ = wsgi_request(
        made.app, made.context_path, [("traceparent", f"00-{T}-{P}-01")]
    )
    assert status == 200
    assert headers["traceresponse"].split("-")[1] == T


class _Raising(TextMapPropagator):
    """A propagator that fails on every request (a broken plugin)."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise RuntimeError("broken propagator")

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return {"traceparent"}


@pytest.mark.parametrize("mode", ["continue", "restart"])
def test_a_failing_propagator_is_counted_and_the_request_starts_a_new_trace(
    target: Callable[..., Target], mode: str
) -> None:
    """A propagator that raises never breaks the request: a new root, one internal error
    counted per request under ``http.extract``."""
    made = target("flask", trace_context_incoming=mode)
    before = _internal_errors.internal_errors().get("http.extract", 0)
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(_Raising())
    try:
        reply = made.get([("traceparent", f"00-{T}-{P}-01")])
    finally:
        propagate.set_global_textmap(saved)
    assert reply.status == 200
    assert reply.trace_id != T
    assert reply.parent_id is None
    assert not reply.span.links
    assert _internal_errors.internal_errors().get("http.extract", 0) == before + 1
