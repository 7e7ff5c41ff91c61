"""A realistic multi-blueprint app's own functional tests pass unchanged with and without
obskit's Flask instrumentation: instrumentation must not change app behaviour."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from tests.apps.bookshop import create_app
from tests.test_flask_versions import REDIRECT  # 302; 303 from Flask 3.2


@pytest.fixture(params=[False, True], ids=["plain", "instrumented"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> FlaskClient:
    if request.param:
        obskit.init(service_name="bookshop")
    app = create_app(tmp_path / "shop.db", instrument=request.param)
    return app.test_client()


def _login(client: FlaskClient, name: str = "ada") -> None:
    assert client.post("/auth/register", data={"name": name, "password": "pw"}).status_code == 201
    response = client.post("/auth/login", data={"name": name, "password": "pw"})
    assert response.status_code == REDIRECT
    assert response.headers["Location"] == "/books/"


def test_home_page_renders_its_template(client: FlaskClient) -> None:
    """The home page renders through the template inheritance chain."""
    response = client.get("/")
    assert response.status_code == 200
    assert b"<h1>Welcome to the bookshop</h1>" in response.data


def test_registration_validates_and_rejects_duplicates(client: FlaskClient) -> None:
    """Registration needs both fields and a new name."""
    assert client.post("/auth/register", data={"name": "x"}).status_code == 400
    assert client.post("/auth/register", data={"name": "x", "password": "p"}).status_code == 201
    assert client.post("/auth/register", data={"name": "x", "password": "p"}).status_code == 409


def test_login_checks_credentials(client: FlaskClient) -> None:
    """Wrong passwords are refused; the login page answers GET."""
    client.post("/auth/register", data={"name": "bob", "password": "right"})
    assert client.post("/auth/login", data={"name": "bob", "password": "wrong"}).status_code == 401
    assert client.get("/auth/login").data == b"please log in"


def test_books_require_login(client: FlaskClient) -> None:
    """Anonymous users are redirected to the login page."""
    response = client.get("/books/")
    assert response.status_code == REDIRECT
    assert response.headers["Location"] == "/auth/login"


def test_book_crud_round_trip(client: FlaskClient) -> None:
    """Create, read (HTML and JSON), update, list and delete a book."""
    _login(client)
    created = client.post("/books/", data={"title": "Dune", "author": "Herbert"})
    assert created.status_code == REDIRECT
    location = created.headers["Location"]
    assert location.startswith("/books/")
    page = client.get(location)
    assert b"<h1>Dune</h1>" in page.data
    assert client.get(f"{location}?format=json").get_json()["author"] == "Herbert"
    assert client.post(f"{location}/edit", data={"title": "Dune Messiah"}).status_code == REDIRECT
    assert b"Dune Messiah by Herbert" in client.get("/books/").data
    assert client.post(f"{location}/delete").status_code == REDIRECT
    assert b"Dune" not in client.get("/books/").data


def test_validation_errors_render_with_400(client: FlaskClient) -> None:
    """A book without an author re-renders the list with an error and a 400."""
    _login(client)
    response = client.post("/books/", data={"title": "Nameless"})
    assert response.status_code == 400
    assert b'<p class="error">title and author required</p>' in response.data


def test_other_users_books_are_not_found(client: FlaskClient) -> None:
    """A book of another user answers the custom 404 page."""
    _login(client, "owner")
    location = client.post("/books/", data={"title": "Mine", "author": "Me"}).headers["Location"]
    client.post("/auth/logout")
    _login(client, "intruder")
    response = client.get(location)
    assert response.status_code == 404
    assert b"<h1>No such page</h1>" in response.data


def test_logout_clears_the_session(client: FlaskClient) -> None:
    """After logout the books are out of reach again."""
    _login(client)
    assert client.post("/auth/logout").headers["Location"] == "/"
    assert client.get("/books/").status_code == REDIRECT


def test_unknown_pages_use_the_apps_404_handler(client: FlaskClient) -> None:
    """The app's own 404 handler answers unknown URLs."""
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"No such page" in response.data


def test_instrumented_bookshop_names_spans_by_blueprint_route_templates(
    tmp_path: Path, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """Under instrumentation the same flows produce spans named by full route templates."""
    exporter = spans(service_name="bookshop")
    client = create_app(tmp_path / "shop.db", instrument=True).test_client()
    _login(client)
    location = client.post("/books/", data={"title": "Dune", "author": "Herbert"}).headers[
        "Location"
    ]
    client.post(f"{location}/edit", data={"title": "Dune II"}, buffered=True)
    client.get("/nope", buffered=True)
    names = {span.name for span in exporter.get_finished_spans()}
    assert {"POST /auth/register", "POST /auth/login", "POST /books/"} <= names
    assert "POST /books/<int:book_id>/edit" in names
    assert "GET" in names  # the unmatched /nope
