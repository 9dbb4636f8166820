"""Names kept from 0.1.16 still import and work."""

from __future__ import annotations

from diffs.helpers import precise_timestamp
from diffs.models import Diff, DiffModelDescriptor, DiffModelManager, DiffSortedSet


def test_old_import_paths():
    assert precise_timestamp() > 1.7e12
    assert {Diff, DiffModelDescriptor, DiffModelManager, DiffSortedSet}
