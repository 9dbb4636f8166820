"""django-diffs has no database models.

This module re-exports the read API under the names 0.1.16 used
(``from diffs.models import Diff, DiffModelManager``), so old imports keep working.
"""

from __future__ import annotations

from diffs.diff import Diff
from diffs.managers import DiffModelDescriptor, DiffModelManager
from diffs.sortedset import DiffSortedSet

__all__ = ["Diff", "DiffModelDescriptor", "DiffModelManager", "DiffSortedSet"]
