"""Settings of the child processes of ``tests/test_exit_hooks.py``.

``tests.settings`` with ``write_behind`` on, against the redis-server the test started
(``DIFFS_EXIT_REDIS_URL``), and a SQLite file (``DIFFS_EXIT_DB``) that a child and its own
multiprocessing children share. ``DIFFS_EXIT_SOCKET_TIMEOUT`` sets ``socket_timeout``.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DIFFS_EXIT_DB"]},
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

DIFFS_SETTINGS = {
    "url": os.environ["DIFFS_EXIT_REDIS_URL"],
    "write_behind": True,
    "socket_timeout": float(os.environ.get("DIFFS_EXIT_SOCKET_TIMEOUT", "10")),
}
