"""Scheduling diffs: into the delivery queue when their transaction commits.

Inside a transaction each diff gets a small on-commit callback of its own, registered
through Django's ``on_commit``, so a rolled-back savepoint discards exactly the diffs
made inside it. Those callbacks only queue their diff (no I/O). One more callback,
kept last in the transaction's list, flushes the queue: the diffs of a whole
transaction reach Redis in one round trip, in the order they were made. It is kept
out of every savepoint's reach (a rollback of the last savepoint must not take the
flush with it) by registering it with an empty savepoint set, which Django's
``on_commit`` cannot express: this module appends that entry to
``connection.run_on_commit`` itself (the one private structure it touches; its shape,
``(savepoint ids, callable, robust)``, is the same from Django 4.2 to 6.x).

A Redis failure never breaks the ``save()`` whose database write committed (unless
``on_redis_error`` is ``"raise"``): see ``diffs.delivery``.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from diffs import delivery, outbox
from diffs.clock import now_ms
from diffs.payload import PendingDiff
from diffs.settings import get_settings
from diffs.tracking import CommitToken


class _QueueOnCommit(CommitToken):
    """Queues one diff when the transaction (and every savepoint around it) commits."""

    __slots__ = ("item",)

    def __init__(self, item: delivery.Queued) -> None:
        super().__init__()
        self.item = item

    def __call__(self) -> None:
        self.ran = True
        self.item.committed_ms = now_ms()
        delivery.enqueue((self.item,))


class _FlushAfterCommit:
    """Flushes the queue once the transaction's diffs are in it; only the newest acts."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = True

    def __call__(self) -> None:
        if self.active:
            delivery.flush_soon()


def schedule(pending: PendingDiff, using: str | None) -> CommitToken | None:
    """Queue ``pending`` for Redis when database ``using`` commits (now, outside one).

    Returns the callback that runs at commit, or None when the diff was queued now.
    """
    conf = get_settings()
    alias = using or "default"
    connection = connections[alias]
    deferred = conf.use_transactions and connection.in_atomic_block
    # A deferred diff gets its commit time when the commit happens (_QueueOnCommit).
    item = delivery.Queued(pending, committed_ms=0.0) if deferred else delivery.Queued(pending)
    if conf.durable:
        item.outbox_row = (alias, outbox.record(pending, alias))
    if not deferred:
        delivery.enqueue((item,))
        delivery.flush_soon()
        return None
    callback = _QueueOnCommit(item)
    # Registered on the alias the instance was saved to: a rollback of that
    # transaction, or of a savepoint around the save, discards the diff. (What
    # transaction.on_commit(callback, using=alias) does, without a second lookup.)
    connection.on_commit(callback, robust=True)
    _keep_flush_last(connection, robust=conf.on_redis_error != "raise")
    return callback


def _keep_flush_last(connection: BaseDatabaseWrapper, *, robust: bool) -> None:
    # A new flush goes after the new diff and the previous one stands down, rather than
    # moving entries around: captureOnCommitCallbacks() slices this list by position.
    previous: _FlushAfterCommit | None = getattr(connection, _LAST_FLUSH, None)
    if previous is not None:
        previous.active = False
    flush = _FlushAfterCommit()
    setattr(connection, _LAST_FLUSH, flush)
    hooks: list[Any] = connection.run_on_commit
    hooks.append((set(), flush, robust))


_LAST_FLUSH = "_diffs_last_flush"
