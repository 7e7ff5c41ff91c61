"""The app bench_e2e.py serves under gunicorn: a hello route, with or without obskit
(OBSKIT_BENCH_INSTRUMENT=1), otherwise identical. With OBSKIT_BENCH_EXPORT=1 obskit
exports its spans over OTLP (to OTEL_EXPORTER_OTLP_ENDPOINT) instead of not at all."""

from __future__ import annotations

import os

from flask import Flask


def create_app() -> Flask:
    app = Flask("e2e")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    if os.environ.get("OBSKIT_BENCH_INSTRUMENT") == "1":
        import obskit

        if os.environ.get("OBSKIT_BENCH_EXPORT") == "1":
            obskit.init(service_name="e2e", log_format="json")  # OTLP to the endpoint set
        else:
            obskit.init(service_name="e2e", traces_exporter="none", log_format="json")
        obskit.instrument_flask(app)
    return app
