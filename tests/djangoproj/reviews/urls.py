from django.urls import path

from tests.djangoproj.reviews import views

urlpatterns = [
    path("<int:book_id>/", views.BookReviews.as_view(), name="book-reviews"),
    path("<int:book_id>/new", views.add_review, name="review-new"),
]
