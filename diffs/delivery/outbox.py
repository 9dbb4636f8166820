"""Durable mode's outbox: each diff written to a table in its change's transaction.

The row commits or rolls back with the change itself, so a process killed between
the commit and the Redis write loses nothing: ``flush_diffs`` writes what the table
still holds. Rows are deleted once Redis has their diff; writes are idempotent, so a
row written to Redis twice (by its process and by ``flush_diffs``) is stored once.

Bulk writes use the same table in every mode for the diffs a transaction cannot keep
in memory (``diffs.delivery.on_commit``): :func:`insert_many` inserts them in batches and
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
from diffs.delivery.record import OutgoingDiff
from diffs.keys import in_layout
from diffs.settings import get_settings

if TYPE_CHECKING:
    from diffs.models import OutboxEntry

logger = logging.getLogger("diffs")


def outbox_model() -> type[OutboxEntry]:
    """The outbox table's model.

    Looked up in the app registry rather than imported: this module is imported before
    the registry is ready (diffs/__init__ -> diffs.delivery -> outbox), and diffs.models also
    re-exports the read API, which reaches back to delivery.
    """
    return apps.get_model("diffs", "OutboxEntry")


def insert(diff: OutgoingDiff, using: str) -> int:
    """Insert ``diff`` into the outbox of database ``using``; return the row id."""
    row = _entry(diff, now_ms())
    row.save(using=using, force_insert=True)
    return int(row.pk)


def insert_many(diffs: Sequence[OutgoingDiff], using: str) -> list[int]:
    """Insert ``diffs`` into the outbox of database ``using``; return their row ids,
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
        ids = _copy_in(connection, diffs, recorded)
    elif connection.vendor in _RETURNING_VENDORS:
        ids = _insert_returning(connection, diffs, recorded)
    else:
        entries = [_entry(diff, recorded) for diff in diffs]
        if connection.features.can_return_rows_from_bulk_insert:
            entry_model.objects.using(using).bulk_create(entries)
        else:
            for entry in entries:
                entry.save(using=using, force_insert=True)
        ids = [entry.pk for entry in entries]
    if len(ids) != len(diffs) or any(row_id is None for row_id in ids):
        # Without its id a row could be neither read back nor deleted: fail the write
        # (in the change's transaction) rather than leave a row nobody owns.
        msg = f"The outbox of database {using!r} did not return the ids of inserted rows."
        raise DatabaseError(msg)
    return [int(row_id) for row_id in ids]


#: Backends whose multi-row ``INSERT ... VALUES ... RETURNING`` :func:`insert_many`
#: writes itself (SQLite from 3.35, which Django 5.2 requires).
_RETURNING_VENDORS = ("postgresql", "sqlite")

#: The columns :func:`insert_many` fills, in ``_values()`` order.
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

#: The columns :func:`read` and :func:`rows` fetch, in the order ``_diff_from`` takes.
_COLUMNS = ("id", *_INSERTED)

#: Rows per ``INSERT`` where the backend sets no limit on query parameters.
_ROWS_PER_INSERT = 500


def _insert_returning(
    connection: Any, diffs: Sequence[OutgoingDiff], recorded: float
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
        for start in range(0, len(diffs), per_insert):
            batch = diffs[start : start + per_insert]
            params = [value for diff in batch for value in _values(diff, recorded)]
            cursor.execute(head + ", ".join([row_sql] * len(batch)) + tail, params)
            ids.extend(row[0] for row in cursor.fetchall())
    return ids


def _can_copy(connection: Any) -> bool:
    # psycopg 3's cursors have copy(); psycopg2's do not.
    with connection.cursor() as cursor:
        return hasattr(cursor.cursor, "copy")


def _copy_in(connection: Any, diffs: Sequence[OutgoingDiff], recorded: float) -> list[int]:
    """Insert ``diffs`` with ``COPY``, ids drawn from the table's sequence first (a
    ``COPY`` returns nothing); the ids ascend in the order of ``diffs``."""
    entry_model = outbox_model()
    quote = connection.ops.quote_name
    table = entry_model._meta.db_table
    column = {field.name: field.column for field in entry_model._meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in ("id", *_INSERTED))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [quote(table), column["id"], len(diffs)],
        )
        drawn = [row[0] for row in cursor.fetchall()]
        if any(row_id is None for row_id in drawn):
            msg = f"{table}.{column['id']} has no sequence to draw ids from."
            raise DatabaseError(msg)
        ids = sorted(int(row_id) for row_id in drawn)
        copy = f"COPY {quote(table)} ({columns}) FROM STDIN"
        # Django's DatabaseError, as its own cursor methods raise.
        with connection.wrap_database_errors, cursor.cursor.copy(copy) as stream:
            for row_id, diff in zip(ids, diffs, strict=True):
                stream.write_row((row_id, *_values(diff, recorded)))
    return ids


def _values(diff: OutgoingDiff, recorded: float) -> tuple[Any, ...]:
    return (
        diff.key,
        diff.feed_key,
        diff.member,
        diff.feed_member,
        diff.score,
        recorded,
        diff.label,
        diff.object_pk,
    )


def _entry(diff: OutgoingDiff, recorded: float) -> OutboxEntry:
    entry_model = outbox_model()
    return entry_model(
        key=diff.key,
        feed_key=diff.feed_key,
        member=diff.member,
        feed_member=diff.feed_member,
        score=diff.score,
        recorded_ms=recorded,
        label=diff.label,
        object_pk=diff.object_pk,
    )


def read(alias: str, ids: Sequence[int]) -> list[OutgoingDiff]:
    """The diffs of rows ``ids`` of the outbox of ``alias`` (see :func:`rows`), in
    the order of ``ids``; rows no longer there (``flush_diffs`` wrote them) are left out.

    One query: callers keep ``ids`` short (``diffs.delivery.on_commit`` reads a piece at a time).
    """
    entry_model = outbox_model()
    cluster = get_settings().cluster
    found = (
        entry_model.objects.using(alias)
        .filter(refused__isnull=True, **_selecting(ids))
        .values_list(*_COLUMNS)
    )
    by_id = {values[0]: _diff_from(alias, values, cluster) for values in found}
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


def rows(alias: str, batch_size: int = 500) -> Iterator[list[OutgoingDiff]]:
    """Yield the diffs of the outbox of ``alias`` in batches, in order: each with its
    ``outbox_row``, and the time its row was written as ``committed_ms``.

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
        yield [_diff_from(alias, values, cluster) for values in found]


def _diff_from(alias: str, values: Sequence[Any], cluster: bool) -> OutgoingDiff:
    """The diff of a row of ``alias`` from its ``_COLUMNS``, keys in the current layout."""
    row_id, key, feed_key, member, feed_member, score, recorded_ms, label, object_pk = values
    key, feed_key = in_layout(key, feed_key, cluster=cluster)
    return OutgoingDiff(
        key=key,
        member=member,
        feed_key=feed_key,
        feed_member=feed_member,
        score=score,
        label=label,
        object_pk=object_pk,
        committed_ms=float(recorded_ms),
        outbox_row=(alias, int(row_id)),
        # A row outlives its write when the process dies between the write and the
        # row's deletion: the write script must look for it before adding it again.
        maybe_stored=True,
    )
