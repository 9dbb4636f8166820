"""Settings of the test project served by a real ASGI server (tests/support/asgi_server.py).

The suite's settings, with a database the server process can share with no one: an
SQLite file named by ``DIFFS_ASGI_SQLITE``. Redis is the suite's (fakeredis in the
server's own memory by default, or the real server or cluster of the run).
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DIFFS_ASGI_SQLITE"],
        # Several requests write at once: wait for the lock instead of failing.
        "OPTIONS": {"timeout": 20},
    }
}
