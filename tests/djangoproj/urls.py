from django.urls import include, path

from obskit.integrations.django import metrics_view

urlpatterns = [
    path("catalog/", include("tests.djangoproj.catalog.urls")),
    path("reviews/", include("tests.djangoproj.reviews.urls")),
    path("internal/metrics", metrics_view),
]
