"""The outbox table of durable mode, and 0.1.16's import names.

``OutboxEntry`` holds, in durable mode, each diff written in the same database
transaction as its change, until Redis has it. The read API is re-exported under the
names 0.1.16 used (``from diffs.models import Diff, DiffModelManager``), so old
imports keep working.
"""

from __future__ import annotations

from django.db import models

from diffs.diff import Diff
from diffs.managers import DiffModelDescriptor, DiffModelManager
from diffs.sortedset import DiffSortedSet

__all__ = ["Diff", "DiffModelDescriptor", "DiffModelManager", "DiffSortedSet", "OutboxEntry"]


class OutboxEntry(models.Model):
    """A committed diff that Redis may not have yet (durable mode, and bulk writes past
    ``spill_after_bytes``)."""

    id = models.BigAutoField(primary_key=True)
    #: The object's sorted set and the model feed the diff goes to.
    key = models.TextField()
    feed_key = models.TextField()
    #: The Redis members, exactly as they will be written.
    member = models.TextField()
    feed_member = models.TextField()
    #: A fixed score (epoch ms) from ``_last_save_at``, or null for "by arrival".
    score = models.FloatField(null=True)
    #: Epoch ms at which the row was written, inside the change's transaction.
    recorded_ms = models.FloatField()
    #: ``app_label.model_name`` and pk of the changed object, for logs.
    label = models.CharField(max_length=255)
    object_pk = models.TextField()
    #: Why Redis can never take this diff (``flush_diffs`` then leaves it alone and says
    #: so); null for a row waiting to be written. Null, not "", so that rows inserted
    #: without naming the column (outbox.insert_many's INSERT) need no database default.
    refused = models.TextField(null=True, blank=True)  # noqa: DJ001

    class Meta:
        db_table = "diffs_outbox"
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        return f"diff of {self.label} pk={self.object_pk}"
