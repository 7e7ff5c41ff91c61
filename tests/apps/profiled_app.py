"""A Flask app for the profiles tests: ``/report/<int:n>`` burns CPU in
``render_report`` inside the request's span; ``/health`` answers at once."""

from __future__ import annotations

import time

from flask import Flask

import obskit


def render_report(seconds: float) -> int:
    """The request's work: CPU spent in this function, where a profile must show it."""
    deadline = time.perf_counter() + seconds
    rows = 0
    while time.perf_counter() < deadline:
        rows += sum(range(100))
    return rows


def create_app() -> Flask:
    obskit.init(service_name="profiled")
    app = Flask("profiled")

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/report/<int:n>")
    def report(n: int) -> dict[str, int]:
        return {"rows": render_report(0.4)}

    return obskit.instrument_flask(app)
