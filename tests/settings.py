"""Test settings.

Default: fakeredis (test_mode) and SQLite in memory, no server needed. Environment
variables switch to real servers:

* ``DIFFS_TEST_REDIS_URL=redis://127.0.0.1:6379/15``: a real Redis (never db 0;
  the suite flushes that db only);
* ``DIFFS_TEST_CLUSTER=1``: a Redis Cluster of three primaries that the test session
  starts itself on free ports and stops at its end (``tests/conftest.py``); it exports
  the cluster's ``redis+cluster://`` URL as ``DIFFS_TEST_CLUSTER_URL``, which this
  module reads, so subprocesses of the tests use the same cluster;
* ``DIFFS_TEST_DATABASE=postgres``: PostgreSQL at ``DIFFS_TEST_PG_HOST``
  (127.0.0.1), port 5432, user ``postgres``; ``DIFFS_TEST_PG_NAME`` names the
  database (``diffs``, so the suite's is ``test_diffs``) for runs side by side.
"""

from __future__ import annotations

import os

SECRET_KEY = "django-diffs-tests"
USE_TZ = True
TIME_ZONE = "America/Chicago"  # not UTC on purpose: scores must still be true epoch ms
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "diffs",
    "tests.testapp",
]

# For the admin pages (tests/test_admin.py).
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ROOT_URLCONF = "tests.urls"

#: True when the suite runs against a Redis Cluster of its own (DIFFS_TEST_CLUSTER=1).
CLUSTER = os.environ.get("DIFFS_TEST_CLUSTER", "") not in ("", "0")

if CLUSTER and os.environ.get("DIFFS_TEST_REDIS_URL"):
    raise RuntimeError("Set DIFFS_TEST_REDIS_URL or DIFFS_TEST_CLUSTER, not both")

# A real Redis: the one named, or the suite's cluster. Empty means fakeredis. The cluster's
# URL is only known once conftest.py has started it (pytest_configure, after this module
# is imported), so conftest.py sets REDIS_URL and DIFFS_SETTINGS again then.
if CLUSTER:
    REDIS_URL = os.environ.get("DIFFS_TEST_CLUSTER_URL", "")
else:
    REDIS_URL = os.environ.get("DIFFS_TEST_REDIS_URL", "")

if REDIS_URL:
    DIFFS_SETTINGS: dict[str, object] = {"url": REDIS_URL}
elif CLUSTER:  # replaced by conftest.py; port 1 fails loudly if it ever is not
    DIFFS_SETTINGS = {"url": "redis+cluster://127.0.0.1:1"}
else:
    DIFFS_SETTINGS = {"test_mode": True}

if os.environ.get("DIFFS_TEST_DATABASE", "sqlite") == "postgres":
    _default = {
        "ENGINE": "django.db.backends.postgresql",
        # Its own name per concurrent run (test_<NAME> is created and dropped).
        "NAME": os.environ.get("DIFFS_TEST_PG_NAME", "diffs"),
        "USER": os.environ.get("DIFFS_TEST_PG_USER", "postgres"),
        "HOST": os.environ.get("DIFFS_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DIFFS_TEST_PG_PORT", "5432"),
    }
else:
    _default = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

DATABASES = {
    "default": _default,
    # A second alias, to show diffs follow the transaction of the database saved to.
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

LOGGING_CONFIG = None
