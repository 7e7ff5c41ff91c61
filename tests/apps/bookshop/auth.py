"""Registration, login and logout, with the user id in the session."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from flask import Blueprint, redirect, request, session, url_for

auth = Blueprint("auth", __name__)


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if "user_id" not in session:
            return redirect(url_for("auth.login"))
        return view(*args, **kwargs)

    return wrapped


@auth.route("/register", methods=["POST"])
def register() -> tuple[str, int]:
    from tests.apps.bookshop import get_db

    name, password = request.form.get("name", ""), request.form.get("password", "")
    if not name or not password:
        return "name and password required", 400
    db = get_db()
    try:
        db.execute("INSERT INTO users (name, password) VALUES (?, ?)", (name, _hash(password)))
        db.commit()
    except Exception:
        return "user exists", 409
    return "registered", 201


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    from tests.apps.bookshop import get_db

    if request.method == "GET":
        return "please log in", 200
    row = (
        get_db()
        .execute("SELECT id, password FROM users WHERE name = ?", (request.form.get("name", ""),))
        .fetchone()
    )
    if row is None or row["password"] != _hash(request.form.get("password", "")):
        return "bad credentials", 401
    session["user_id"] = row["id"]
    return redirect(url_for("books.index"))


@auth.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("home"))
