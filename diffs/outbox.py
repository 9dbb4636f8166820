"""Durable mode's outbox: each diff written to a table in its change's transaction.

The row commits or rolls back with the change itself, so a process killed between
the commit and the Redis write loses nothing: ``flush_diffs`` writes what the table
still holds. Rows are deleted once Redis has their diff; writes are idempotent, so a
row written to Redis twice (by its process and by ``flush_diffs``) is stored once.

Bulk writes use the same table in every mode for the diffs a transaction cannot keep
in memory (``diffs.writer``): :func:`record_many` inserts them in batches and
:func:`read` fetches them back, by row id, when the transaction has committed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import DatabaseError, connections, router

from diffs.clock import now_ms
from diffs.keys import in_layout
from diffs.payload import PendingDiff
from diffs.settings import get_settings

if TYPE_CHECKING:
    from diffs.models import OutboxEntry

logger = logging.getLogger("diffs")


def outbox_model() -> type[OutboxEntry]:
    """The outbox table's model.

    Looked up in the app registry rather than imported: this module is imported before
    the registry is ready (diffs/__init__ -> flushing -> outbox), and diffs.models also
    re-exports the read API, which reaches back to delivery.
    """
    return apps.get_model("diffs", "OutboxEntry")


def record(pending: PendingDiff, using: str) -> int:
    """Insert ``pending`` into the outbox of database ``using``; return the row id."""
    row = _entry(pending, now_ms())
    row.save(using=using, force_insert=True)
    return int(row.pk)


def record_many(pendings: Sequence[PendingDiff], using: str) -> list[int]:
    """Insert ``pendings`` into the outbox of database ``using``; return their row ids,
    in the same order.

    On PostgreSQL with psycopg 3, ids taken from the table's sequence and one
    ``COPY`` (about a fourth of what ``INSERT`` statements cost); multi-row ``INSERT
    ... RETURNING`` statements on other PostgreSQL drivers and SQLite (Django's
    ``bulk_create()`` spends more time preparing each object than the database takes
    to store it); Django's ``bulk_create()`` on other backends that return the ids of a
    bulk insert, and one ``INSERT`` per diff on those that do not.
    """
    entry_model = outbox_model()
    connection = connections[using]
    recorded = now_ms()
    ids: list[Any]
    if connection.vendor == "postgresql" and _can_copy(connection):
        ids = _copy_in(connection, pendings, recorded)
    elif connection.vendor in _RETURNING_VENDORS:
        ids = _insert_returning(connection, pendings, recorded)
    else:
        entries = [_entry(pending, recorded) for pending in pendings]
        if connection.features.can_return_rows_from_bulk_insert:
            entry_model.objects.using(using).bulk_create(entries)
        else:
            for entry in entries:
                entry.save(using=using, force_insert=True)
        ids = [entry.pk for entry in entries]
    if len(ids) != len(pendings) or any(row_id is None for row_id in ids):
        # Without its id a row could be neither read back nor deleted: fail the write
        # (in the change's transaction) rather than leave a row nobody owns.
        msg = f"The outbox of database {using!r} did not return the ids of inserted rows."
        raise DatabaseError(msg)
    return [int(row_id) for row_id in ids]


#: Backends whose multi-row ``INSERT ... VALUES ... RETURNING`` :func:`record_many`
#: writes itself (SQLite from 3.35, which Django 5.2 requires).
_RETURNING_VENDORS = ("postgresql", "sqlite")

#: The columns :func:`record_many` fills, in ``_values()`` order.
_INSERTED = (
    "key",
    "feed_key",
    "member",
    "feed_member",
    "score",
    "recorded_ms",
    "label",
    "object_pk",
)

#: The columns :func:`read` and :func:`rows` fetch, in the order ``_pending_from`` takes.
_COLUMNS = ("id", *_INSERTED)

#: Rows per ``INSERT`` where the backend sets no limit on query parameters.
_ROWS_PER_INSERT = 500


def _insert_returning(
    connection: Any, pendings: Sequence[PendingDiff], recorded: float
) -> list[Any]:
    entry_model = outbox_model()
    quote = connection.ops.quote_name
    column = {field.name: field.column for field in entry_model._meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in _INSERTED)
    head = f"INSERT INTO {quote(entry_model._meta.db_table)} ({columns}) VALUES "
    row_sql = "(" + ", ".join(["%s"] * len(_INSERTED)) + ")"
    tail = f" RETURNING {quote(column['id'])}"
    limit = connection.features.max_query_params
    per_insert = _ROWS_PER_INSERT if limit is None else max(1, limit // len(_INSERTED))
    ids: list[Any] = []
    with connection.cursor() as cursor:
        for start in range(0, len(pendings), per_insert):
            batch = pendings[start : start + per_insert]
            params = [value for pending in batch for value in _values(pending, recorded)]
            cursor.execute(head + ", ".join([row_sql] * len(batch)) + tail, params)
            ids.extend(row[0] for row in cursor.fetchall())
    return ids


def _can_copy(connection: Any) -> bool:
    # psycopg 3's cursors have copy(); psycopg2's do not.
    with connection.cursor() as cursor:
        return hasattr(cursor.cursor, "copy")


def _copy_in(connection: Any, pendings: Sequence[PendingDiff], recorded: float) -> list[int]:
    """Insert ``pendings`` with ``COPY``, ids drawn from the table's sequence first (a
    ``COPY`` returns nothing); the ids ascend in the order of ``pendings``."""
    entry_model = outbox_model()
    quote = connection.ops.quote_name
    table = entry_model._meta.db_table
    column = {field.name: field.column for field in entry_model._meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in ("id", *_INSERTED))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [quote(table), column["id"], len(pendings)],
        )
        drawn = [row[0] for row in cursor.fetchall()]
        if any(row_id is None for row_id in drawn):
            msg = f"{table}.{column['id']} has no sequence to draw ids from."
            raise DatabaseError(msg)
        ids = sorted(int(row_id) for row_id in drawn)
        copy = f"COPY {quote(table)} ({columns}) FROM STDIN"
        # Django's DatabaseError, as its own cursor methods raise.
        with connection.wrap_database_errors, cursor.cursor.copy(copy) as stream:
            for row_id, pending in zip(ids, pendings, strict=True):
                stream.write_row((row_id, *_values(pending, recorded)))
    return ids


def _values(pending: PendingDiff, recorded: float) -> tuple[Any, ...]:
    return (
        pending.key,
        pending.feed_key,
        pending.member,
        pending.feed_member,
        pending.timestamp,
        recorded,
        pending.label,
        pending.pk,
    )


def _entry(pending: PendingDiff, recorded: float) -> OutboxEntry:
    entry_model = outbox_model()
    return entry_model(
        key=pending.key,
        feed_key=pending.feed_key,
        member=pending.member,
        feed_member=pending.feed_member,
        score=pending.timestamp,
        recorded_ms=recorded,
        label=pending.label,
        object_pk=pending.pk,
    )


def read(alias: str, ids: Sequence[int]) -> list[tuple[int, PendingDiff, float]]:
    """The rows ``ids`` of the outbox of ``alias`` as ``(row id, diff, recorded_ms)``, in
    the order of ``ids``; rows no longer there (``flush_diffs`` wrote them) are left out.

    One query: callers keep ``ids`` short (``diffs.writer`` reads a piece at a time).
    """
    entry_model = outbox_model()
    cluster = get_settings().cluster
    found = (
        entry_model.objects.using(alias)
        .filter(refused__isnull=True, **_selecting(ids))
        .values_list(*_COLUMNS)
    )
    by_id = {values[0]: _pending_from(values, cluster) for values in found}
    return [by_id[row_id] for row_id in ids if row_id in by_id]


def forget(rows: Sequence[tuple[str, int]]) -> None:
    """Delete outbox rows whose diffs Redis now has (errors are logged, not raised)."""
    entry_model = outbox_model()
    by_alias: dict[str, list[int]] = defaultdict(list)
    for alias, row_id in rows:
        by_alias[alias].append(row_id)
    for alias, ids in by_alias.items():
        try:
            entry_model.objects.using(alias).filter(**_selecting(ids)).delete()
        except DatabaseError:
            # Harmless: flush_diffs will write them again, and Redis ignores repeats.
            logger.warning(
                "Could not delete %d delivered row(s) from the diffs outbox of database "
                "%r; flush_diffs will find them already in Redis.",
                len(ids),
                alias,
                exc_info=True,
            )


def set_aside(rows: Sequence[tuple[str, int, str]]) -> None:
    """Mark outbox rows ``(alias, row id, reason)`` whose diffs Redis can never take: the
    rows stay, with the reason, and ``flush_diffs`` no longer tries them (errors are
    logged, not raised: the row is then tried again, and set aside again)."""
    entry_model = outbox_model()
    for alias, row_id, reason in rows:
        try:
            entry_model.objects.using(alias).filter(pk=row_id).update(refused=reason[:1000])
        except DatabaseError:
            logger.warning(
                "Could not set aside row %d of the diffs outbox of database %r.",
                row_id,
                alias,
                exc_info=True,
            )


def count_set_aside(alias: str) -> int:
    """How many rows of the outbox of ``alias`` are set aside (see :func:`set_aside`)."""
    entry_model = outbox_model()
    return int(entry_model.objects.using(alias).filter(refused__isnull=False).count())


def _selecting(ids: Sequence[int]) -> dict[str, Any]:
    """The filter for rows ``ids``: a range when they are consecutive (the rows of one
    multi-row INSERT mostly are), cheaper for the database than a long list."""
    ordered = sorted(set(ids))
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[0] + len(ordered))):
        return {"pk__gte": ordered[0], "pk__lte": ordered[-1]}
    return {"pk__in": ordered}


def aliases() -> list[str]:
    """The databases that may hold an outbox table."""
    entry_model = outbox_model()
    return [alias for alias in connections if router.allow_migrate_model(alias, entry_model)]


def rows(alias: str, batch_size: int = 500) -> Iterator[list[tuple[int, PendingDiff, float]]]:
    """Yield the outbox of ``alias`` in batches of ``(row id, diff, recorded_ms)``, in order.

    The keys follow the current settings' layout (one server or a cluster), whichever
    the row was written with.
    """
    entry_model = outbox_model()
    cluster = get_settings().cluster
    last = 0
    while True:
        found = list(
            entry_model.objects.using(alias)
            .filter(pk__gt=last, refused__isnull=True)
            .order_by("pk")
            .values_list(*_COLUMNS)[:batch_size]
        )
        if not found:
            return
        last = found[-1][0]
        yield [_pending_from(values, cluster) for values in found]


def _pending_from(values: Sequence[Any], cluster: bool) -> tuple[int, PendingDiff, float]:
    """``(row id, diff, recorded_ms)`` from a row's ``_COLUMNS``, keys in the current layout."""
    row_id, key, feed, member, feed_member, score, recorded_ms, label, object_pk = values
    key, feed = in_layout(key, feed, cluster=cluster)
    pending = PendingDiff(
        key=key,
        member=member,
        feed_key=feed,
        feed_member=feed_member,
        timestamp=score,
        label=label,
        pk=object_pk,
    )
    return int(row_id), pending, float(recorded_ms)
