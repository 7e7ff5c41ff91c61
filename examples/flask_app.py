"""An example Flask app instrumented by obskit (the Flask docs page and the tests use it).

Run it:  gunicorn -c examples/gunicorn.conf.py -w 2 'examples.flask_app:create_app()'
Every request gets a server span, RED metrics, an access log line. The metrics are on
obskit's own port, not the app's: http://127.0.0.1:9464/metrics (OBSKIT_METRICS_PORT;
under the hooks, one for all workers).
"""

from __future__ import annotations

import time

from flask import Flask, Response, abort, redirect, request, stream_with_context, url_for

import obskit

log = obskit.get_logger(__name__)


@obskit.traced
def load_post(post_id: int) -> dict[str, object]:
    """A traced "database" call: a child span of the request's span."""
    log.info("loading post", post_id=post_id)
    time.sleep(0.001)
    return {"id": post_id, "title": f"Post {post_id}"}


def create_app(**settings: object) -> Flask:
    """The app factory: initialise obskit (settings also come from OTEL_*/OBSKIT_*)."""
    obskit.init(**{"service_name": "flask-example", **settings})
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/post/<int:post_id>")
    def show_post(post_id: int) -> dict[str, object]:
        request_id = request.args.get("request_id")
        if request_id:
            obskit.bind(request_id=request_id)
        log.info("showing post", post_id=post_id)
        return load_post(post_id)

    @app.route("/post/<int:post_id>/update", methods=["POST"])
    def update_post(post_id: int) -> tuple[dict[str, object], int]:
        return {"updated": post_id}, 200

    @app.get("/slow")
    def slow() -> dict[str, float]:
        seconds = float(request.args.get("seconds", "0.2"))
        time.sleep(seconds)
        return {"slept": seconds}

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("the example failure")

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "try later", 503

    @app.get("/missing")
    def missing() -> str:
        abort(404)

    @app.get("/go")
    def go() -> Response:
        return redirect(url_for("index"))

    @app.get("/stream")
    def stream() -> Response:
        chunks = int(request.args.get("chunks", "3"))
        pause = float(request.args.get("pause", "0.05"))

        def generate():  # type: ignore[no-untyped-def]
            for n in range(chunks):
                log.info("streaming chunk", n=n)
                time.sleep(pause)
                yield f"chunk {n}\n"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    obskit.instrument_flask(app)
    return app
