"""A second app: reviews of catalog books (class-based list, function-based create)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import ListView

import obskit
from tests.djangoproj.catalog.models import Book
from tests.djangoproj.reviews.models import Review

log = obskit.get_logger(__name__)


class BookReviews(ListView):  # type: ignore[type-arg]
    template_name = "reviews/review_list.html"
    context_object_name = "reviews"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return Review.objects.filter(book_id=self.kwargs["book_id"]).order_by("-stars")


@csrf_exempt
def add_review(request: HttpRequest, book_id: int) -> JsonResponse:
    book = get_object_or_404(Book, pk=book_id)
    review = Review.objects.create(book=book, stars=int(request.POST.get("stars", 3)))
    log.info("review added", book_id=book_id, stars=review.stars)
    return JsonResponse({"id": review.pk}, status=201)
