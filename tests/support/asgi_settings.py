"""Settings of the test project served by a real ASGI server (tests/support/asgi_server.py,
benchmarks/sse_latency.py).

The suite's settings (Redis: fakeredis in the server's own memory by default, or the
run's real server or cluster), with a database of the server's own:

* ``DIFFS_ASGI_SQLITE``: an SQLite file; without it, the suite's PostgreSQL settings
  (``DIFFS_TEST_DATABASE=postgres``, ``DIFFS_TEST_PG_NAME`` naming the database);
* ``DIFFS_ASGI_CONN_MAX_AGE``: Django's ``CONN_MAX_AGE`` (default 0);
* ``DIFFS_ASGI_MAX_WAIT``: ``DIFFS_SETTINGS["max_wait"]`` (how long one stream lasts).
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, DIFFS_SETTINGS

if os.environ.get("DIFFS_ASGI_SQLITE"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["DIFFS_ASGI_SQLITE"],
            # Several requests write at once: wait for the lock instead of failing.
            "OPTIONS": {"timeout": 20},
        }
    }
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DIFFS_ASGI_CONN_MAX_AGE", "0"))
if os.environ.get("DIFFS_ASGI_MAX_WAIT"):
    DIFFS_SETTINGS = {**DIFFS_SETTINGS, "max_wait": float(os.environ["DIFFS_ASGI_MAX_WAIT"])}
if os.environ.get("DIFFS_ASGI_DEBUG_LOG"):
    LOGGING = {
        "version": 1,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {"diffs": {"handlers": ["stderr"], "level": "DEBUG"}},
    }
