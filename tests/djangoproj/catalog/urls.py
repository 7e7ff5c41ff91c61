from django.urls import path

from tests.djangoproj.catalog import views

urlpatterns = [
    path("", views.book_list, name="book-list"),
    path("book/<int:pk>", views.BookDetail.as_view(), name="book-detail"),
    path("book/new", views.create_book, name="book-new"),
    path("async/ping", views.async_ping, name="async-ping"),
    path("boom", views.boom, name="boom"),
    path("unavailable", views.unavailable, name="unavailable"),
    path("stream", views.stream, name="stream"),
    path("astream", views.astream, name="astream"),
    path("login", views.login, name="login"),
    path("context", views.context, name="context"),
    path("item/<int:pk>", views.item, name="item"),
    path("wait/<int:pk>", views.wait, name="wait"),
]
