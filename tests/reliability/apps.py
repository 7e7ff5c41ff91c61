"""The example Flask app plus the routes the hostile-input tests need (gunicorn serves it
as ``tests.reliability.apps:create_flask_app()``)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, make_response
from opentelemetry import baggage, trace

from examples.flask_app import create_app
from tests.reliability.canaries import SESSION_CANARY


def create_flask_app(**settings: Any) -> Flask:
    """examples.flask_app with /login (sets a canary cookie), /context and /items/<id>."""
    app = create_app(**settings)

    @app.get("/login")
    def login() -> Response:
        response = make_response("logged in")
        response.set_cookie("session", SESSION_CANARY)
        return response

    @app.get("/context")
    def context() -> dict[str, Any]:
        span_context = trace.get_current_span().get_span_context()
        return {
            "tracestate": span_context.trace_state.to_header(),
            "baggage": {k: str(v) for k, v in baggage.get_all().items()},
        }

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app
