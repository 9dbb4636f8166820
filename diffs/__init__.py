"""django-diffs: record every change to a Django model in Redis for a fixed window.

Decorate a model with ``@diffs.register``; read its changes with ``instance.diffs``
or ``Model.diffs.get_by_object_id(pk)``; run ``manage.py prune_diffs`` from cron.

``__all__`` is the public face of the package. Other modules are internal, except
``diffs.contrib.drf``, ``diffs.recording.connect``/``disconnect`` and the 0.1.16 names
the README lists as still working.
"""

from __future__ import annotations

from diffs.bulk import DiffsQuerySet, DiffsQuerySetMixin
from diffs.connection import get_connection, reset_connection
from diffs.context import context, get_context
from diffs.delivery import FlushReport, flush_diffs, write_waiting_diffs
from diffs.diff import Diff
from diffs.exceptions import (
    CursorExpired,
    DiffsError,
    DiffsWriteError,
    HookError,
    InvalidCursor,
    RedisTooOld,
    RedisUnavailable,
    RegistrationError,
)
from diffs.feed import FeedPage
from diffs.feeds import asince, since
from diffs.managers import DiffModelDescriptor, DiffModelManager
from diffs.registry import is_registered, registered_models
from diffs.sortedset import DiffSortedSet
from diffs.wiring import register, unregister

__version__ = "1.0.0.dev0"


#: What replaced the 0.1.16 names that are gone.
_REPLACED = {
    "klasses_to_connect": (
        "diffs.klasses_to_connect was removed in django-diffs 1.0: @diffs.register "
        "connects a model at once; diffs.registered_models() lists the registered ones."
    ),
}


def __getattr__(name: str) -> object:
    if name in _REPLACED:
        raise AttributeError(_REPLACED[name])
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "CursorExpired",
    "Diff",
    "DiffModelDescriptor",
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
    "RedisTooOld",
    "RedisUnavailable",
    "RegistrationError",
    "__version__",
    "asince",
    "context",
    "flush_diffs",
    "get_connection",
    "get_context",
    "is_registered",
    "register",
    "registered_models",
    "reset_connection",
    "since",
    "unregister",
    "write_waiting_diffs",
]
