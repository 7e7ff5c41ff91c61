"""CRUD on books, rendered with templates, for logged-in users."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request, session, url_for

from tests.apps.bookshop.auth import login_required

books = Blueprint("books", __name__)


def _db() -> Any:
    from tests.apps.bookshop import get_db

    return get_db()


@books.get("/")
@login_required
def index() -> str:
    rows = (
        _db()
        .execute(
            "SELECT id, title, author FROM books WHERE owner = ? ORDER BY id", (session["user_id"],)
        )
        .fetchall()
    )
    return render_template("books.html", books=rows)


@books.post("/")
@login_required
def create() -> Any:
    title, author = request.form.get("title", "").strip(), request.form.get("author", "").strip()
    if not title or not author:
        return render_template("books.html", books=[], error="title and author required"), 400
    db = _db()
    cursor = db.execute(
        "INSERT INTO books (title, author, owner) VALUES (?, ?, ?)",
        (title, author, session["user_id"]),
    )
    db.commit()
    return redirect(url_for("books.detail", book_id=cursor.lastrowid))


def _owned(book_id: int) -> Any:
    row = (
        _db()
        .execute(
            "SELECT id, title, author FROM books WHERE id = ? AND owner = ?",
            (book_id, session["user_id"]),
        )
        .fetchone()
    )
    if row is None:
        abort(404)
    return row


@books.get("/<int:book_id>")
@login_required
def detail(book_id: int) -> Any:
    book = _owned(book_id)
    if request.args.get("format") == "json":
        return jsonify(dict(book))
    return render_template("book.html", book=book)


@books.post("/<int:book_id>/edit")
@login_required
def edit(book_id: int) -> Any:
    _owned(book_id)
    db = _db()
    db.execute("UPDATE books SET title = ? WHERE id = ?", (request.form["title"], book_id))
    db.commit()
    return redirect(url_for("books.detail", book_id=book_id))


@books.post("/<int:book_id>/delete")
@login_required
def delete(book_id: int) -> Any:
    _owned(book_id)
    db = _db()
    db.execute("DELETE FROM books WHERE id = ?", (book_id,))
    db.commit()
    return redirect(url_for("books.index"))
