"""``flush_diffs()``: the one flush, writing every diff still waiting for Redis, now.

Two places hold such diffs: this process's retry queue (diffs a failed write left
behind) and, in durable mode, the outbox table of each database (diffs of processes
that died, or could not reach Redis, after their transaction committed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from django.db import DatabaseError, connections
from redis.exceptions import RedisClusterException

from diffs.connection import underlying_error
from diffs.delivery import outbox, queue
from diffs.settings import get_settings

logger = logging.getLogger("diffs")


@dataclass(frozen=True)
class FlushReport:
    """What :func:`flush_diffs` wrote, and what still waits in this process's memory."""

    #: Diffs written from this process's retry queue.
    from_memory: int
    #: Diffs written from outbox tables (a diff Redis already had counts too).
    from_outbox: int
    #: Diffs still waiting in this process's memory (Redis failed again).
    waiting: int
    #: Outbox rows set aside because Redis can never take their diffs (a fixed score
    #: out of the window, a malformed row): kept in the table with the reason, skipped.
    set_aside: int = 0


def flush_diffs(*, include_outbox: bool | None = None) -> FlushReport:
    """Write this process's waiting diffs, then the outbox rows, to Redis.

    The outbox holds durable mode's diffs, and those of large bulk writes whose process
    stopped before it had written them. ``include_outbox``: True reads every outbox
    table there is (what ``manage.py flush_diffs`` does), False none; by default, in
    durable mode only.

    Redis errors from the outbox pass propagate (``redis.RedisError``): the rows stay
    and the next call writes them. The retry queue follows ``on_redis_error``.
    """
    memory = queue.write_queued(force=True)
    from_outbox = set_aside = 0
    durable = get_settings().durable
    if include_outbox is None:
        include_outbox = durable
    if include_outbox and not memory.waiting:
        for alias in outbox.aliases():
            # Outside durable mode, a database may never have had the table created.
            if durable or _has_outbox_table(alias):
                from_outbox += _write_outbox(alias)
                set_aside += _count_set_aside(alias)
    return FlushReport(memory.written, from_outbox, memory.waiting, set_aside)


def _write_outbox(alias: str) -> int:
    written = 0
    try:
        for batch in outbox.rows(alias):
            # A row Redis can never take is set aside (and logged), never in the way of
            # the rows behind it.
            refused = queue.write_batch(batch)
            queue.settle_outbox_rows(batch, refused)
            written += len(batch) - len(refused)
    except RedisClusterException as error:
        # How a cluster client says the cluster is out of reach; it is no RedisError.
        # Raised as the RedisError this module promises (manage.py flush_diffs reports it).
        cause = underlying_error(error)
        kind = type(cause) if isinstance(cause, redis.RedisError) else redis.RedisError
        raise kind(str(error)) from error
    except DatabaseError:
        # Most likely no table: the migration was not run on this database.
        logger.warning(
            "Could not read the diffs outbox of database %r; run manage.py migrate "
            "diffs --database=%s.",
            alias,
            alias,
            exc_info=True,
        )
    return written


def _has_outbox_table(alias: str) -> bool:
    try:
        return (
            outbox.outbox_model()._meta.db_table in connections[alias].introspection.table_names()
        )
    except DatabaseError:
        return False


def _count_set_aside(alias: str) -> int:
    try:
        return outbox.count_set_aside(alias)
    except DatabaseError:  # no table: reported by _write_outbox already
        return 0
