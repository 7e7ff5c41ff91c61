"""The example Flask app plus routes that add metric series, for the metrics-directory
fault tests (gunicorn serves it as ``tests.reliability.metrics_app:create_app()``)."""

from __future__ import annotations

from flask import Flask

import obskit
from examples.flask_app import create_app as create_example_app


def create_app() -> Flask:
    """examples.flask_app with ``/grow/<n>``: a traced call that increments
    ``grow_total{n}``, a new label set (a new entry in the worker's files) per ``n``."""
    app = create_example_app()
    grow = obskit.counter("grow_total", "Series added by /grow/<n>.", ["n"])

    @obskit.traced
    def add_series(n: int) -> int:
        # A long label value: each series takes ~350 bytes of the worker's counter file,
        # so a few hundred of them outgrow the room the file reserved when it was made.
        grow.labels(f"{n:0>200}").inc()
        return n

    @app.get("/grow/<int:n>")
    def grow_route(n: int) -> dict[str, int]:
        return {"n": add_series(n)}

    return app
