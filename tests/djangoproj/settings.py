"""Settings of the Django project the tests use (WSGI under gunicorn, ASGI under uvicorn)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "obskit.integrations.django",
    "tests.djangoproj.catalog",
    "tests.djangoproj.reviews",
]
MIDDLEWARE = [
    "obskit.integrations.django.ObskitMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "tests.djangoproj.urls"
TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True}
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGOPROJ_DB", str(Path(tempfile.gettempdir()) / "obskit-djangoproj.sqlite3")
        ),
    }
}
if os.environ.get("DJANGOPROJ_PG"):  # "host port user dbname": the project on PostgreSQL
    _host, _port, _user, _name = os.environ["DJANGOPROJ_PG"].split()
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _host,
        "PORT": _port,
        "USER": _user,
        "NAME": _name,
    }
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

OBSKIT = {"service_name": "django-example"}
