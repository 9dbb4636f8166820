"""Durable mode's outbox: each diff written to a table in its change's transaction.

The row commits or rolls back with the change itself, so a process killed between
the commit and the Redis write loses nothing: ``flush_diffs`` writes what the table
still holds. Rows are deleted once Redis has their diff; writes are idempotent, so a
row written to Redis twice (by its process and by ``flush_diffs``) is stored once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence

from django.db import DatabaseError, connections, router

from diffs.clock import now_ms
from diffs.keys import in_layout
from diffs.payload import PendingDiff
from diffs.settings import get_settings

logger = logging.getLogger("diffs")


def record(pending: PendingDiff, using: str) -> int:
    """Insert ``pending`` into the outbox of database ``using``; return the row id."""
    from diffs.models import OutboxEntry

    row = OutboxEntry.objects.using(using).create(
        key=pending.key,
        feed_key=pending.feed_key,
        member=pending.member,
        feed_member=pending.feed_member,
        score=pending.timestamp,
        recorded_ms=now_ms(),
        label=pending.label,
        object_pk=pending.pk,
    )
    return int(row.pk)


def forget(rows: Sequence[tuple[str, int]]) -> None:
    """Delete outbox rows whose diffs Redis now has (errors are logged, not raised)."""
    from diffs.models import OutboxEntry

    by_alias: dict[str, list[int]] = defaultdict(list)
    for alias, row_id in rows:
        by_alias[alias].append(row_id)
    for alias, ids in by_alias.items():
        try:
            OutboxEntry.objects.using(alias).filter(pk__in=ids).delete()
        except DatabaseError:
            # Harmless: flush_diffs will write them again, and Redis ignores repeats.
            logger.warning(
                "Could not delete %d delivered row(s) from the diffs outbox of database "
                "%r; flush_diffs will find them already in Redis.",
                len(ids),
                alias,
                exc_info=True,
            )


def aliases() -> list[str]:
    """The databases that may hold an outbox table."""
    from diffs.models import OutboxEntry

    return [alias for alias in connections if router.allow_migrate_model(alias, OutboxEntry)]


def rows(alias: str, batch_size: int = 500) -> Iterator[list[tuple[int, PendingDiff, float]]]:
    """Yield the outbox of ``alias`` in batches of ``(row id, diff, recorded_ms)``, in order.

    The keys follow the current settings' layout (one server or a cluster), whichever
    the row was written with.
    """
    from diffs.models import OutboxEntry

    cluster = get_settings().cluster
    last = 0
    while True:
        entries = list(
            OutboxEntry.objects.using(alias).filter(pk__gt=last).order_by("pk")[:batch_size]
        )
        if not entries:
            return
        last = entries[-1].pk
        batch = []
        for entry in entries:
            key, feed = in_layout(entry.key, entry.feed_key, cluster=cluster)
            pending = PendingDiff(
                key=key,
                member=entry.member,
                feed_key=feed,
                feed_member=entry.feed_member,
                timestamp=entry.score,
                label=entry.label,
                pk=entry.object_pk,
            )
            batch.append((entry.pk, pending, entry.recorded_ms))
        yield batch
