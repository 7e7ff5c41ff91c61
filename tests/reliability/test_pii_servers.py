"""Scenario 9: PII canaries through real servers with header capture on.

Flask under gunicorn and Django under gunicorn (obskit's hooks, as deployed), over real
HTTP (``http.client`` sending the request line and headers verbatim, so an absolute URI
with userinfo reaches the server as a client would send it). The canaries must not reach
the server's stdout, the spans the OTLP receiver decoded, the pod's ``/metrics`` (text
and OpenMetrics, with exemplars).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.receivers import OtlpHttpReceiver, ReceivedSpan
from tests.reliability.canaries import (
    ALL,
    LEAKY_QUERY,
    REFERER,
    SESSION_CANARY,
    baggage_requests,
)
from tests.servers import Server, raw_get, trace_id_of

CANARY = "canary-7d41e0"
CLIENT_CANARY = "198.51.100.77"  # a client address the proxy header claims
SENSITIVE = ["authorization", "proxy-authorization", "cookie", "x-api-key", "x-forwarded-for"]
CAPTURE = {
    "OBSKIT_HTTP_CAPTURE_REQUEST_HEADERS": ",".join([*SENSITIVE, "x-team"]),
    "OBSKIT_HTTP_CAPTURE_RESPONSE_HEADERS": "set-cookie,content-type",
    "OTEL_TRACES_SAMPLER": "always_on",
}
HEADERS = [
    ("Authorization", f"Bearer {CANARY}"),
    ("Proxy-Authorization", f"Basic {CANARY}"),
    ("Cookie", f"session={CANARY}; theme=dark"),
    ("X-Api-Key", CANARY),
    ("X-Forwarded-For", CLIENT_CANARY),
    ("X-Team", "payments"),
]
QUERY = f"password={CANARY}&token={CANARY}&sig={CANARY}&page=2"
# framework -> (a page, the page whose response sets the canary cookie)
APPS = {
    "flask": ("/post/1", "/login"),
    "django": ("/catalog/", "/catalog/login"),
}
ROUTES = {"flask": ["/post/<int:post_id>", "/login"], "django": ["catalog/", "catalog/login"]}


def _start(
    framework: str,
    gunicorn: Callable[..., Server],
    django_server: Callable[..., Server],
    **env: str,
) -> Server:
    if framework == "flask":
        return gunicorn("sync", "tests.reliability.apps:create_flask_app()", hooks=True, **env)
    return django_server("gunicorn+hooks", **env)


def _text(spans: list[ReceivedSpan]) -> str:
    return repr([(s.name, s.attributes) for s in spans])


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_canaries_never_leave_the_server(
    framework: str,
    gunicorn: Callable[..., Server],
    django_server: Callable[..., Server],
    http_receiver: OtlpHttpReceiver,
) -> None:
    """Canaries in sensitive headers, query, Set-Cookie and URL userinfo, with capture on:
    none in stdout, exported spans or /metrics; sensitive headers show [REDACTED]; no
    client address without capture_pii."""
    page, login = APPS[framework]
    server = _start(framework, gunicorn, django_server, **CAPTURE)
    port = server.port
    userinfo = f"http://admin:{CANARY}@127.0.0.1:{port}{page}?{QUERY}"
    replies = [raw_get(port, target, HEADERS) for target in (f"{page}?{QUERY}", login, userinfo)]
    assert [status for status, _, _ in replies] == [200, 200, 200]
    assert SESSION_CANARY in replies[1][1]["set-cookie"]  # the app really sent it
    mine = {trace_id_of(headers) for _, headers, _ in replies}
    # The pod's /metrics (both workers merged): scrape until both requests' series (and
    # their exemplars) have been seen, checking every scrape for canaries.
    routes = [f'http_route="{route}"' for route in ROUTES[framework]]
    scrapes: list[str] = []
    for _ in range(40):
        for accept in ("text/plain", "application/openmetrics-text"):
            scrapes.append(server.scrape(accept=accept))
        seen = "".join(scrapes)
        if all(route in seen for route in routes) and "# {" in seen:
            break
    assert all(route in seen for route in routes)
    assert "# {" in seen  # exemplars were scraped too
    spans = http_receiver.wait_for_traces(mine, 1)
    servers = [s for s in spans if s.kind == 2 and s.trace_id in mine]
    assert len(servers) == 3
    for span in servers:
        for name in SENSITIVE:
            assert span.attributes[f"http.request.header.{name}"] == ["[REDACTED]"], name
        assert span.attributes["http.request.header.x-team"] == ["payments"]
        assert "client.address" not in span.attributes
    by_path = {s.attributes["url.path"]: s for s in servers}
    assert by_path[login].attributes["http.response.header.set-cookie"] == ["[REDACTED]"]
    server.stop()
    stdout = server.stdout_path.read_text()
    assert '"obskit.access"' in stdout  # the access lines were written
    everywhere = stdout + _text(spans) + "".join(scrapes)
    for secret in (CANARY, SESSION_CANARY, CLIENT_CANARY):
        assert secret not in everywhere
    access = [line for line in server.lines() if line.get("trace_id") in mine]
    assert len([line for line in access if line["logger"] == "obskit.access"]) == 3
    assert all("client.address" not in line for line in access)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_client_address_is_recorded_only_with_capture_pii(
    framework: str,
    gunicorn: Callable[..., Server],
    django_server: Callable[..., Server],
    http_receiver: OtlpHttpReceiver,
) -> None:
    """capture_pii=true: the peer address (not the X-Forwarded-For claim) appears on the
    server span and the access line; sensitive headers stay redacted."""
    page, _ = APPS[framework]
    server = _start(framework, gunicorn, django_server, OBSKIT_CAPTURE_PII="true", **CAPTURE)
    status, headers, _ = raw_get(server.port, f"{page}?request_id=pii", HEADERS)
    assert status == 200
    mine = trace_id_of(headers)
    spans = http_receiver.wait_for_traces({mine}, 1)
    (span,) = [s for s in spans if s.trace_id == mine and s.kind == 2]
    assert span.attributes["client.address"] == "127.0.0.1"
    assert span.attributes["http.request.header.authorization"] == ["[REDACTED]"]
    server.stop()
    access = [line for line in server.lines() if line.get("trace_id") == mine]
    assert [line["client.address"] for line in access if "url.path" in line] == ["127.0.0.1"]
    assert CANARY not in server.stdout_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_query_referer_and_baggage_canaries_never_leave_the_server(
    framework: str,
    gunicorn: Callable[..., Server],
    django_server: Callable[..., Server],
    http_receiver: OtlpHttpReceiver,
) -> None:
    """?email=, ?otp=, ?a=1;token=, ?%74oken=, a Referer's token and user:password, PII in
    an oversized (two header lines joined) or malformed baggage header, and (Django) the
    query its APPEND_SLASH redirect copies into Location: none in stdout, stderr, exported
    spans or /metrics; only the allowlisted page keeps its value."""
    page, _ = APPS[framework]
    server = _start(
        framework,
        gunicorn,
        django_server,
        OBSKIT_HTTP_CAPTURE_REQUEST_HEADERS="referer,baggage",
        OBSKIT_HTTP_CAPTURE_RESPONSE_HEADERS="location",
        OBSKIT_HTTP_QUERY_ALLOWLIST="page",
        OTEL_TRACES_SAMPLER="always_on",
    )
    port = server.port
    requests = [(f"{page}?{LEAKY_QUERY}", [("Referer", REFERER)])]
    requests += [(page, baggage) for baggage in baggage_requests()]
    if framework == "django":
        requests.append((f"/catalog?{LEAKY_QUERY}", []))
    replies = [raw_get(port, target, headers) for target, headers in requests]
    assert [status for status, _, _ in replies] == [200, 200, 200, 200, 301][: len(replies)]
    mine = {trace_id_of(headers) for _, headers, _ in replies}
    scrapes = [
        server.scrape(accept=accept) for accept in ("text/plain", "application/openmetrics-text")
    ]
    spans = http_receiver.wait_for_traces(mine, 1)
    servers = {s.trace_id: s for s in spans if s.kind == 2 and s.trace_id in mine}
    assert len(servers) == len(replies)
    query = "email=[REDACTED]&otp=[REDACTED]&a=[REDACTED];token=[REDACTED]&token=[REDACTED]&page=2"
    first = servers[trace_id_of(replies[0][1])].attributes
    assert first["url.query"] == query
    assert first["http.request.header.referer"] == [
        "https://shop.example/cart?token=[REDACTED]&page=3"
    ]
    for _, headers, _ in replies[1:4]:
        assert servers[trace_id_of(headers)].attributes["http.request.header.baggage"] == [
            "[REDACTED]"
        ]
    if framework == "django":
        redirect = servers[trace_id_of(replies[4][1])].attributes
        assert redirect["http.response.header.location"] == [f"/catalog/?{query}"]
    server.stop()
    stdout = server.stdout_path.read_text()
    stderr = server.stderr_path.read_text()
    assert "opentelemetry.baggage.propagation" in stdout  # the SDK did warn, redacted
    everywhere = stdout + stderr + _text(spans) + "".join(scrapes)
    assert [canary for canary in ALL if canary in everywhere] == []
