"""django-diffs: record every change to a Django model in Redis for a fixed window.

Decorate a model with ``@diffs.register``; read its changes with ``instance.diffs``
or ``Model.diffs.get_by_object_id(pk)``; run ``manage.py prune_diffs`` from cron.
"""

from __future__ import annotations

from diffs.connection import get_connection, reset_connection
from diffs.diff import Diff
from diffs.exceptions import DiffsError, HookError, RegistrationError
from diffs.managers import DiffModelManager
from diffs.registry import is_registered, register, registered_models, unregister
from diffs.sortedset import DiffSortedSet

__version__ = "1.0.0.dev0"

__all__ = [
    "Diff",
    "DiffModelManager",
    "DiffSortedSet",
    "DiffsError",
    "HookError",
    "RegistrationError",
    "__version__",
    "get_connection",
    "is_registered",
    "register",
    "registered_models",
    "reset_connection",
    "unregister",
]
