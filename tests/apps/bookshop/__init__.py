"""A small but realistic Flask app for the tests: blueprints (auth, books), sessions,
Jinja templates, SQLite, error handlers. Its functional tests run with and without
obskit to prove instrumentation changes nothing the app does."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from flask import Flask, g, render_template

from tests.apps.bookshop.auth import auth
from tests.apps.bookshop.books import books

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, password TEXT);
CREATE TABLE IF NOT EXISTS books (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, author TEXT NOT NULL, owner INTEGER
);
"""


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        from flask import current_app

        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    return g.db  # type: ignore[no-any-return]


def create_app(database: Path, instrument: bool = False) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test-only", DATABASE=str(database))
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.executescript(SCHEMA)
    app.register_blueprint(auth, url_prefix="/auth")
    app.register_blueprint(books, url_prefix="/books")

    @app.teardown_appcontext
    def close_db(error: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return render_template("404.html"), 404

    @app.get("/")
    def home() -> str:
        return render_template("home.html")

    if instrument:
        import obskit

        obskit.instrument_flask(app)
    return app
