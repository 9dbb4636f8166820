"""Settings of the django-diffs example project.

Development settings only: the secret key below is public. Environment variables:

* ``DJANGO_DEBUG``: ``0``/``false`` turns DEBUG off (default: on).
* ``DIFFS_REDIS_URL``: a Redis URL such as ``redis://127.0.0.1:6379/1``. Without it
  the example runs in django-diffs' test mode (fakeredis, no server needed); fakeredis
  keeps its data in the memory of the process, so diffs vanish when the process ends.
  Either way the example's keys are under its own prefix, ``example:diffs:``.
* ``DIFFS_MAX_ELEMENT_AGE``: how many seconds diffs are kept (default: 3600). A tiny
  value shows what a client gets for an expired cursor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-example-project-only-never-use-in-production"
)

DEBUG = os.environ.get("DJANGO_DEBUG", "true").strip().lower() not in {"0", "false", "no", "off"}

ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "diffs",
    "polls",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Each diff a request records carries {"user": <pk>} (the admin shows who).
    "diffs.middleware.DiffsContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-diffs: a real Redis when DIFFS_REDIS_URL is set, else fakeredis (test mode).
# The example's keys all start with its own prefix, so it may share a Redis database
# with other projects: its prune_diffs (and the clean start in its README) touches
# only these keys.
DIFFS_SETTINGS: dict[str, Any] = {
    "prefix": "example:diffs:",
    "max_element_age": float(os.environ.get("DIFFS_MAX_ELEMENT_AGE", "3600")),
}
if os.environ.get("DIFFS_REDIS_URL"):
    DIFFS_SETTINGS["url"] = os.environ["DIFFS_REDIS_URL"]
else:
    DIFFS_SETTINGS["test_mode"] = True
