"""``tests.settings`` with ``DIFFS_SETTINGS['url']`` taken from the environment variable
``DIFFS_TEST_SUBPROCESS_REDIS_URL``: for a test that runs ``python -m django <command>``
as a real process against a Redis of its choosing (one that is down, say).
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DIFFS_SETTINGS = {"url": os.environ["DIFFS_TEST_SUBPROCESS_REDIS_URL"]}
