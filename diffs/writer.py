"""Writing diffs to Redis: now, or when the database transaction commits.

A Redis failure here never breaks the ``save()`` that produced the diff: the
database write already happened (and, on commit, is already durable), so the error
is logged on the ``diffs`` logger with the model and pk instead of raised.
"""

from __future__ import annotations

import functools
import logging

import redis
from django.db import transaction

from diffs import store
from diffs.connection import get_connection
from diffs.payload import PendingDiff
from diffs.settings import get_settings

logger = logging.getLogger("diffs")


def schedule(pending: PendingDiff, using: str | None) -> None:
    """Write ``pending`` on commit of database ``using`` (or now, per the settings)."""
    if get_settings().use_transactions:
        # Registered on the alias the instance was saved to: a rollback of that
        # transaction, or of a savepoint around the save, discards the diff.
        transaction.on_commit(functools.partial(write, pending), using=using, robust=True)
    else:
        write(pending)


def write(pending: PendingDiff) -> None:
    """Add ``pending`` to its sorted set, logging instead of raising on Redis errors."""
    try:
        store.add(
            get_connection(),
            pending.key,
            pending.feed_key,
            pending.member,
            pending.feed_member,
            pending.timestamp,
        )
    except redis.AuthenticationError:
        logger.exception(
            "Could not write the diff of %s pk=%s: Redis refused the credentials in "
            "DIFFS_SETTINGS (check the user name and password in ['url'] or ['redis']). "
            "The database change itself was saved.",
            pending.label,
            pending.pk,
        )
    except redis.RedisError:
        logger.exception(
            "Could not write the diff of %s pk=%s to Redis key %s; the database change "
            "itself was saved.",
            pending.label,
            pending.pk,
            pending.key,
        )
    except Exception:
        # Not a Redis answer: the client could not even be built or used, which means
        # DIFFS_SETTINGS holds a value redis-py rejects. Still no reason to fail a save
        # whose row is written.
        logger.exception(
            "Could not write the diff of %s pk=%s: the Redis client failed before "
            "reaching Redis. Check DIFFS_SETTINGS['redis'] and ['url'].",
            pending.label,
            pending.pk,
        )
