"""django-diffs: record every change to a Django model in Redis for a fixed window.

Decorate a model with ``@diffs.register``; read its changes with ``instance.diffs``
or ``Model.diffs.get_by_object_id(pk)``; run ``manage.py prune_diffs`` from cron.
"""

from __future__ import annotations

from diffs.bulk import DiffsQuerySet, DiffsQuerySetMixin
from diffs.connection import get_connection, reset_connection
from diffs.diff import Diff
from diffs.exceptions import (
    CursorExpired,
    DiffsError,
    DiffsWriteError,
    HookError,
    InvalidCursor,
    RedisUnavailable,
    RegistrationError,
)
from diffs.exit_hooks import write_waiting_diffs
from diffs.feed import FeedPage
from diffs.flushing import FlushReport, flush_diffs
from diffs.managers import DiffModelManager
from diffs.registry import is_registered, register, registered_models, unregister
from diffs.sortedset import DiffSortedSet

__version__ = "1.0.0.dev0"

__all__ = [
    "CursorExpired",
    "Diff",
    "DiffModelManager",
    "DiffSortedSet",
    "DiffsError",
    "DiffsQuerySet",
    "DiffsQuerySetMixin",
    "DiffsWriteError",
    "FeedPage",
    "FlushReport",
    "HookError",
    "InvalidCursor",
    "RedisUnavailable",
    "RegistrationError",
    "__version__",
    "flush_diffs",
    "get_connection",
    "is_registered",
    "register",
    "registered_models",
    "reset_connection",
    "unregister",
    "write_waiting_diffs",
]
