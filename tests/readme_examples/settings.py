"""Settings of the process that executes the README's examples: a new project, as the
README's Installation step leaves it, with fakeredis instead of a server."""

from __future__ import annotations

SECRET_KEY = "readme-examples"
USE_TZ = True
INSTALLED_APPS = [
    # What startproject installs.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "diffs",
    "polls",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The Installation step's prefix; test mode as the README's "Test mode" section sets it.
DIFFS_SETTINGS = {"prefix": "mysite:diffs:", "test_mode": True}
