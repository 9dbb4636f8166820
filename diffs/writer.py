"""Scheduling diffs: into the delivery queue when their transaction commits.

Inside a transaction each diff of a ``save()`` or ``delete()`` gets a small on-commit
callback of its own, registered through Django's ``on_commit``, so a rolled-back
savepoint discards exactly the diffs made inside it. Those callbacks only queue their
diff (no I/O). One more callback, kept last in the transaction's list, flushes the
queue: the diffs of a whole transaction reach Redis in one round trip, in the order
they were made. It is kept out of every savepoint's reach (a rollback of the last
savepoint must not take the flush with it) by registering it with an empty savepoint
set, which Django's ``on_commit`` cannot express: ``diffs.transactions`` (the one
module that touches Django's private list of on-commit callbacks) appends it.

Bulk writes (``diffs.bulk``) hand over their diffs a chunk at a time
(:func:`schedule_chunk`): one callback per piece of at most ``PIECE_DIFFS`` diffs and
about ``PIECE_BYTES``, not one per diff. What the pieces of one transaction hold in
memory is bounded: once they would hold more than ``spill_after_bytes``, a piece's
diffs go to the outbox table (durable mode's ``diffs_outbox``) inside the
transaction, so they commit or roll back with the change (a savepoint's rollback
takes its rows too), and the piece keeps only their row ids. At commit, in its turn,
such a piece reads its rows back, writes them to Redis after everything queued before
it, and deletes them. In durable mode every diff has its row anyway, so a piece over
the budget just lets go of its copy in memory. Where the table is missing, pieces
stay in memory and one WARNING names the fix. Spilled pieces are written by the
thread that commits, even with ``write_behind``: handing them to the background
writer would put them all back in memory.

A Redis failure never breaks the ``save()`` whose database write committed (unless
``on_redis_error`` is ``"raise"``): see ``diffs.delivery``.
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from diffs import availability, delivery, outbox, transactions
from diffs.clock import now_ms
from diffs.exceptions import DiffsWriteError
from diffs.payload import PendingDiff
from diffs.settings import get_settings
from diffs.tracking import CommitToken

logger = logging.getLogger("diffs")

#: Most diffs in one piece of a bulk write: one on-commit callback, one read of the
#: outbox at commit when spilled.
PIECE_DIFFS = 1000

#: About the most bytes of diffs in one piece (a larger diff goes alone).
PIECE_BYTES = 1_048_576

#: Past this many bytes of bulk-write diffs waiting in memory for one transaction's
#: commit, further pieces spill to the outbox table. (To become the setting
#: ``DIFFS_SETTINGS["spill_after_bytes"]``.)

#: What a waiting diff costs besides its strings: the PendingDiff and list slot.
_PENDING_OVERHEAD = 120

#: How many models/pks a log line names before it says "and N more".
_NAMED_IN_LOGS = 10


class _Named:
    """Gives a callable object the ``__qualname__`` of its class.

    Django logs a robust on-commit callback that raised as ``func.__qualname__``, which
    an instance does not have: the log line itself would then raise AttributeError
    after the commit, and Django would run none of the callbacks after it.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name == "__qualname__":
            return type(self).__qualname__
        raise AttributeError(name)


class _QueueOnCommit(_Named, CommitToken):
    """Queues one diff when the transaction (and every savepoint around it) commits."""

    __slots__ = ("item",)

    def __init__(self, item: delivery.Queued) -> None:
        super().__init__()
        self.item = item

    def __call__(self) -> None:
        self.ran = True
        self.item.committed_ms = now_ms()
        delivery.enqueue((self.item,))


class _FlushAfterCommit(_Named):
    """Flushes the queue once the transaction's diffs are in it; only the newest acts.

    ``bulk`` is the transaction's bulk-write state, when it has one: the flush reports
    (and, with ``on_redis_error = "raise"``, raises) what its spilled pieces could not
    write.
    """

    __slots__ = ("active", "bulk")

    def __init__(self, bulk: _BulkCommit | None) -> None:
        self.active = True
        self.bulk = bulk

    def __call__(self) -> None:
        if not self.active:
            return
        try:
            delivery.flush_soon()
        finally:
            if self.bulk is not None:
                self.bulk.finish()


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


def schedule_chunk(pendings: Sequence[PendingDiff], using: str | None) -> None:
    """Queue the diffs of one chunk of a bulk write for Redis when database ``using``
    commits (now, outside a transaction), in order.

    Inside a transaction they wait in pieces, one on-commit callback each; past
    ``spill_after_bytes`` of them in the transaction, in the outbox table (see the
    module's docstring).
    """
    if not pendings:
        return
    conf = get_settings()
    alias = using or "default"
    connection = connections[alias]
    if not (conf.use_transactions and connection.in_atomic_block):
        for piece, _ in _pieces(pendings):
            _queue_now(piece, alias, durable=conf.durable)
        return
    bulk = _bulk_commit(connection)
    robust = conf.on_redis_error != "raise"
    for piece, size in _pieces(pendings):
        callback = _hold(piece, size, alias, bulk, durable=conf.durable)
        connection.on_commit(callback, robust=True)
        _keep_flush_last(connection, robust=robust, bulk=bulk)


def _queue_now(piece: list[PendingDiff], alias: str, *, durable: bool) -> None:
    rows = outbox.record_many(piece, alias) if durable else None
    delivery.enqueue(_queued(piece, alias, rows, now_ms()))
    delivery.flush_soon()


def _pieces(pendings: Sequence[PendingDiff]) -> Iterator[tuple[list[PendingDiff], int]]:
    """Runs of at most ``PIECE_DIFFS`` diffs and about ``PIECE_BYTES``, with the bytes
    each holds."""
    piece: list[PendingDiff] = []
    size = 0
    for pending in pendings:
        cost = _held_bytes(pending)
        if piece and (len(piece) >= PIECE_DIFFS or size + cost > PIECE_BYTES):
            yield piece, size
            piece, size = [], 0
        piece.append(pending)
        size += cost
    if piece:
        yield piece, size


def _held_bytes(pending: PendingDiff) -> int:
    # The strings a diff owns; its label and feed key are shared by the model's diffs.
    owned = (pending.member, pending.key, pending.feed_member, pending.pk)
    return sum(map(sys.getsizeof, owned)) + _PENDING_OVERHEAD


def _queued(
    piece: Sequence[PendingDiff], alias: str, rows: Sequence[int] | None, committed_ms: float
) -> list[delivery.Queued]:
    if rows is None:
        return [delivery.Queued(pending, committed_ms=committed_ms) for pending in piece]
    return [
        delivery.Queued(pending, committed_ms=committed_ms, outbox_row=(alias, row))
        for pending, row in zip(piece, rows, strict=True)
    ]


def _hold(
    piece: list[PendingDiff], size: int, alias: str, bulk: _BulkCommit, *, durable: bool
) -> _PieceOnCommit:
    """The callback that will deliver ``piece`` (``size`` bytes): holding it in memory
    while the transaction's budget allows, else holding the ids of its outbox rows."""
    rows = outbox.record_many(piece, alias) if durable else None
    if bulk.held_bytes + size > get_settings().spill_after_bytes:
        if rows is None:
            rows = bulk.spill(piece, alias)
        if rows is not None:
            return _PieceOnCommit(bulk, alias, None, array("q", rows))
    bulk.held_bytes += size
    return _PieceOnCommit(bulk, alias, piece, None if rows is None else array("q", rows), size)


class _PieceOnCommit(_Named):
    """Hands one piece of a bulk write's diffs to delivery when the transaction commits:
    from memory (``piece``), or read back from the outbox rows ``rows``."""

    __slots__ = ("alias", "bulk", "held", "piece", "rows")

    def __init__(
        self,
        bulk: _BulkCommit,
        alias: str,
        piece: list[PendingDiff] | None,
        rows: array[int] | None,
        held: int = 0,
    ) -> None:
        self.bulk = bulk
        self.alias = alias
        self.piece = piece
        self.rows = rows
        #: Bytes held in memory until the commit (0 once spilled or delivered).
        self.held = held

    def __call__(self) -> None:
        committed_ms = self.bulk.commit_time()
        piece, self.piece, self.held = self.piece, None, 0
        try:
            if piece is not None:
                delivery.enqueue(_queued(piece, self.alias, self.rows, committed_ms))
            elif self.rows is not None:
                self.bulk.deliver_spilled(self.alias, self.rows, committed_ms)
        except Exception:
            # Logged here, with what became of the diffs, rather than by Django.
            logger.exception(
                "Could not deliver %d diff(s) of a bulk write on database %r. The "
                "database changes were saved; %s",
                len(piece) if piece is not None else len(self.rows or ()),
                self.alias,
                "they are lost."
                if piece is not None
                else "their rows stay in the diffs_outbox table, for manage.py flush_diffs.",
            )


class _BulkCommit:
    """What the bulk-write pieces of one transaction share: the bytes they hold in
    memory, whether the outbox can take more, and what went wrong writing spilled
    pieces at commit (reported by the transaction's flush, which runs last)."""

    def __init__(self, hooks_version: int) -> None:
        #: ``transactions.hooks_version()`` when ``held_bytes`` was last right: it
        #: changes when a savepoint's rollback discards pieces.
        self.hooks_version = hooks_version
        self.held_bytes = 0
        #: The newest flush entry of this transaction. Flush entries survive savepoint
        #: rollbacks, so it waits for the commit until the transaction ends.
        self.flush: _FlushAfterCommit | None = None
        self.finished = False
        #: When the transaction committed (set by its first piece to run).
        self.committed_ms: float | None = None
        self.outbox_refused = False
        #: What kept Redis from taking spilled pieces at commit (the rest skip it).
        self.outage: BaseException | None = None
        #: What delivery raised ("raise" mode), raised again by finish().
        self.raised: DiffsWriteError | None = None
        #: How many diffs stayed in the outbox, or were dropped, after a failure, and
        #: the first few of them by model and pk, for the log.
        self.kept_count = 0
        self.kept: list[str] = []
        self.dropped_count = 0
        self.dropped: list[str] = []

    def commit_time(self) -> float:
        """When the transaction committed: the same for all its pieces."""
        if self.committed_ms is None:
            self.committed_ms = now_ms()
        return self.committed_ms

    def spill(self, piece: list[PendingDiff], alias: str) -> list[int] | None:
        """Insert ``piece`` into the outbox of ``alias``; None when it cannot take it."""
        if self.outbox_refused:
            return None
        if alias not in outbox.aliases():
            _warn_no_outbox(alias, "the database router keeps diffs' tables elsewhere")
            self.outbox_refused = True
            return None
        try:
            # In a savepoint of its own: a failed INSERT must not abort the transaction.
            with transaction.atomic(using=alias):
                return outbox.record_many(piece, alias)
        except DatabaseError as error:
            _warn_no_outbox(alias, str(error).strip() or type(error).__name__)
            self.outbox_refused = True
            return None

    def deliver_spilled(self, alias: str, rows: Sequence[int], committed_ms: float) -> None:
        """Write a spilled piece to Redis after what was queued before it, then delete
        its rows. While Redis is out of reach, ``on_redis_error`` decides: ``"retry"``
        queues them behind the diffs waiting in memory; otherwise durable mode leaves
        the rows to ``flush_diffs`` and the default mode drops them."""
        items = [
            delivery.Queued(pending, committed_ms=committed_ms, outbox_row=(alias, row_id))
            for row_id, pending, _ in outbox.read(alias, rows)
        ]
        if not items:
            return
        if self.outage is None:
            self.outage = self._write_queue_first()
        if self.outage is None:
            try:
                # Delivery's write: refusals (set aside) and outages as for any diff.
                refused = delivery.write_now(items)
            except Exception as error:  # any client error: the database has committed
                availability.trip()
                self.outage = error
            else:
                delivery.settle_outbox_rows(items, refused)
                return
            logger.error(
                "Could not write %d spilled diff(s) of a bulk write to Redis (%s: %s). "
                "The database changes were saved; the next message says what became of "
                "this transaction's diffs.",
                len(items),
                type(self.outage).__name__,
                self.outage,
            )
        self._during_outage(items)

    def _write_queue_first(self) -> BaseException | None:
        """Write what waits in the queue (this transaction's earlier diffs among them),
        so that spilled diffs go after it; return what keeps it waiting, if anything."""
        try:
            result = delivery.flush()
        except DiffsWriteError as error:  # "raise" mode: delivery logged and dropped them
            self.raised = error
            return error
        if result.waiting and get_settings().on_redis_error == "retry":
            return _StillWaiting(f"{result.waiting} diff(s) wait in memory for Redis")
        return None

    def _during_outage(self, items: list[delivery.Queued]) -> None:
        conf = get_settings()
        if conf.on_redis_error == "retry":
            self._hand_over(items)
        elif conf.durable:
            _remember(self.kept, items)  # their rows stay, for manage.py flush_diffs
            self.kept_count += len(items)
        else:
            outbox.forget(_rows_of(items))
            _remember(self.dropped, items)
            self.dropped_count += len(items)

    def _hand_over(self, items: list[delivery.Queued]) -> None:
        """Queue ``items`` for delivery (whose retry buffer bounds what stays in memory)."""
        if not get_settings().durable:
            # From here memory is their home, as for any diff of the default mode.
            outbox.forget(_rows_of(items))
            for item in items:
                item.outbox_row = None
        delivery.enqueue(items)
        try:
            delivery.flush()
        except DiffsWriteError as error:
            self.raised = error

    def finish(self) -> None:
        """Report what spilled pieces could not write; raise it in ``"raise"`` mode."""
        self.finished = True
        mode = get_settings().on_redis_error
        cause = "" if self.outage is None else f"{type(self.outage).__name__}: {self.outage}"
        if self.kept_count:
            logger.error(
                "%d diff(s) of bulk writes stay in the diffs outbox table: Redis failed "
                "(%s): %s. The database changes were saved; manage.py flush_diffs "
                "writes them.",
                self.kept_count,
                cause,
                _name(self.kept, self.kept_count),
            )
        if self.dropped_count:
            logger.error(
                "Lost %d diff(s) of bulk writes: Redis failed (%s): %s. The database "
                "changes were saved; the diffs are dropped (on_redis_error=%r).",
                self.dropped_count,
                cause,
                _name(self.dropped, self.dropped_count),
                mode,
            )
        if mode != "raise":
            return
        unwritten = self.kept_count + self.dropped_count
        if unwritten:
            msg = f"Could not write {unwritten} diff(s) of bulk writes to Redis ({cause})."
            raise DiffsWriteError(msg) from self.outage
        if self.raised is not None:
            raise self.raised


class _StillWaiting(Exception):
    """Diffs a failed write left waiting in memory: spilled ones must queue behind."""


def _rows_of(items: Sequence[delivery.Queued]) -> list[tuple[str, int]]:
    return [item.outbox_row for item in items if item.outbox_row is not None]


def _remember(named: list[str], items: list[delivery.Queued]) -> None:
    # The first few by name, for the log line; not the diffs (they can be large).
    for item in items[: max(0, _NAMED_IN_LOGS - len(named))]:
        named.append(f"{item.pending.label} pk={item.pending.pk}")


def _name(named: list[str], count: int) -> str:
    more = count - len(named)
    return f"{', '.join(named)} and {more} more" if more > 0 else ", ".join(named)


_warned_no_outbox: set[str] = set()


def _warn_no_outbox(alias: str, reason: str) -> None:
    if alias in _warned_no_outbox:
        return
    _warned_no_outbox.add(alias)
    logger.warning(
        "The diffs outbox table of database %r cannot take the diffs of large bulk "
        "writes (%s), so a transaction keeps all of them in memory until it commits. "
        "Run manage.py migrate diffs --database=%s. (Said once per process.)",
        alias,
        reason,
        alias,
    )


def _bulk_commit(connection: BaseDatabaseWrapper) -> _BulkCommit:
    """The bulk-write state of the transaction open on ``connection``."""
    version = transactions.hooks_version(connection)
    current: _BulkCommit | None = getattr(connection, _BULK_COMMIT, None)
    if current is not None and _still_open(current, connection):
        if current.hooks_version != version:
            # A savepoint rolled back and took its pieces: count what is left.
            current.hooks_version = version
            current.held_bytes = sum(
                callback.held
                for callback in transactions.callbacks(connection)
                if isinstance(callback, _PieceOnCommit)
            )
        return current
    current = _BulkCommit(version)
    setattr(connection, _BULK_COMMIT, current)
    return current


def _still_open(bulk: _BulkCommit, connection: BaseDatabaseWrapper) -> bool:
    """True while the transaction ``bulk`` belongs to has neither committed nor rolled
    back: its newest flush entry still waits for the commit (at or near the end)."""
    if bulk.finished or bulk.flush is None:
        return False
    return transactions.is_waiting(connection, bulk.flush)


def _keep_flush_last(
    connection: BaseDatabaseWrapper, *, robust: bool, bulk: _BulkCommit | None = None
) -> _FlushAfterCommit:
    # A new flush goes after the new diff and the previous one stands down, rather than
    # moving entries around: captureOnCommitCallbacks() slices the callbacks by position.
    previous: _FlushAfterCommit | None = getattr(connection, _LAST_FLUSH, None)
    if previous is not None:
        previous.active = False
        if bulk is None and previous.bulk is not None and _still_open(previous.bulk, connection):
            bulk = previous.bulk  # a save after a bulk write: its flush reports for both
    flush = _FlushAfterCommit(bulk)
    if bulk is not None:
        bulk.flush = flush  # the newest: _still_open() finds it at the end of the list
    setattr(connection, _LAST_FLUSH, flush)
    transactions.on_commit_outside_savepoints(connection, flush, robust=robust)
    return flush


_LAST_FLUSH = "_diffs_last_flush"
_BULK_COMMIT = "_diffs_bulk_commit"
