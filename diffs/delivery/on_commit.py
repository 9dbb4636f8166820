"""Scheduling diffs: into the queue when their transaction commits.

Inside a transaction each diff of a ``save()`` or ``delete()`` gets a small on-commit
callback of its own, registered through Django's ``on_commit``, so a rolled-back
savepoint discards exactly the diffs made inside it. Those callbacks only queue their
diff (no I/O). One more callback, kept last in the transaction's list, writes the
queue: the diffs of a whole transaction reach Redis in one round trip, in the order
they were made. It is kept out of every savepoint's reach (a rollback of the last
savepoint must not take the write with it) by registering it with an empty savepoint
set, which Django's ``on_commit`` cannot express: ``diffs.transactions`` (the one
module that touches Django's private list of on-commit callbacks) appends it.

Bulk writes (``diffs.bulk``) hand over their diffs a chunk at a time
(:func:`schedule_many`): one callback per piece of at most ``PIECE_DIFFS`` diffs and
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
thread would put them all back in memory.

A Redis failure never breaks the ``save()`` whose database write committed (unless
``on_redis_error`` is ``"raise"``): see ``diffs.delivery.queue``.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterator, Sequence

from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from diffs import availability, transactions
from diffs.clock import now_ms
from diffs.delivery import background, losses, outbox, queue
from diffs.delivery.record import OutgoingDiff
from diffs.exceptions import DiffsWriteError
from diffs.settings import get_settings
from diffs.transactions import CommitToken, NamedCallback

logger = logging.getLogger("diffs")

#: Most diffs in one piece of a bulk write: one on-commit callback, one read of the
#: outbox at commit when spilled.
PIECE_DIFFS = 1000

#: About the most bytes of diffs in one piece (a larger diff goes alone).
PIECE_BYTES = 1_048_576

#: Past this many bytes of bulk-write diffs waiting in memory for one transaction's
#: commit, further pieces spill to the outbox table. (To become the setting
#: ``DIFFS_SETTINGS["spill_after_bytes"]``.)


class _QueueOnCommit(NamedCallback, CommitToken):
    """Queues one diff when the transaction (and every savepoint around it) commits."""

    __slots__ = ("diff",)

    def __init__(self, diff: OutgoingDiff) -> None:
        super().__init__()
        self.diff = diff

    def __call__(self) -> None:
        self.ran = True
        self.diff.committed_ms = now_ms()
        queue.enqueue((self.diff,))


class _WriteAfterCommit(NamedCallback):
    """Writes the queue once the transaction's diffs are in it; only the newest acts.

    ``bulk`` is the transaction's bulk-write state, when it has one: the write reports
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
            background.write_soon()
        finally:
            if self.bulk is not None:
                self.bulk.finish()


def schedule(diff: OutgoingDiff, using: str | None) -> CommitToken | None:
    """Queue ``diff`` for Redis when database ``using`` commits (now, outside one).

    Returns the callback that runs at commit, or None when the diff was queued now.
    """
    conf = get_settings()
    alias = using or "default"
    connection = connections[alias]
    deferred = conf.use_transactions and connection.in_atomic_block
    if conf.durable:
        diff.outbox_row = (alias, outbox.insert(diff, alias))
    if not deferred:
        diff.committed_ms = now_ms()
        queue.enqueue((diff,))
        background.write_soon()
        return None
    # A deferred diff gets its commit time when the commit happens.
    callback = _QueueOnCommit(diff)
    # Registered on the alias the instance was saved to: a rollback of that
    # transaction, or of a savepoint around the save, discards the diff. (What
    # transaction.on_commit(callback, using=alias) does, without a second lookup.)
    connection.on_commit(callback, robust=True)
    _keep_write_last(connection, robust=conf.on_redis_error != "raise")
    return callback


def schedule_many(diffs: Sequence[OutgoingDiff], using: str | None) -> None:
    """Queue the diffs of one chunk of a bulk write for Redis when database ``using``
    commits (now, outside a transaction), in order.

    Inside a transaction they wait in pieces, one on-commit callback each; past
    ``spill_after_bytes`` of them in the transaction, in the outbox table (see the
    module's docstring).
    """
    if not diffs:
        return
    conf = get_settings()
    alias = using or "default"
    connection = connections[alias]
    if not (conf.use_transactions and connection.in_atomic_block):
        for piece, _ in _pieces(diffs):
            _queue_now(piece, alias, durable=conf.durable)
        return
    bulk = _bulk_commit(connection)
    robust = conf.on_redis_error != "raise"
    for piece, size in _pieces(diffs):
        callback = _hold(piece, size, alias, bulk, durable=conf.durable)
        connection.on_commit(callback, robust=True)
        _keep_write_last(connection, robust=robust, bulk=bulk)


def _queue_now(piece: list[OutgoingDiff], alias: str, *, durable: bool) -> None:
    rows = outbox.insert_many(piece, alias) if durable else None
    queue.enqueue(_committed(piece, alias, rows, now_ms()))
    background.write_soon()


def _pieces(diffs: Sequence[OutgoingDiff]) -> Iterator[tuple[list[OutgoingDiff], int]]:
    """Runs of at most ``PIECE_DIFFS`` diffs and about ``PIECE_BYTES``, with the bytes
    each holds."""
    piece: list[OutgoingDiff] = []
    size = 0
    for diff in diffs:
        cost = diff.held_bytes
        if piece and (len(piece) >= PIECE_DIFFS or size + cost > PIECE_BYTES):
            yield piece, size
            piece, size = [], 0
        piece.append(diff)
        size += cost
    if piece:
        yield piece, size


def _committed(
    piece: list[OutgoingDiff], alias: str, rows: Sequence[int] | None, committed_ms: float
) -> list[OutgoingDiff]:
    """``piece``, each diff given its commit time and, when ``rows`` are given, its row."""
    for diff in piece:
        diff.committed_ms = committed_ms
    if rows is not None:
        for diff, row in zip(piece, rows, strict=True):
            diff.outbox_row = (alias, row)
    return piece


def _hold(
    piece: list[OutgoingDiff], size: int, alias: str, bulk: _BulkCommit, *, durable: bool
) -> _PieceOnCommit:
    """The callback that will deliver ``piece`` (``size`` bytes): holding it in memory
    while the transaction's budget allows, else holding the ids of its outbox rows."""
    rows = outbox.insert_many(piece, alias) if durable else None
    if bulk.held_bytes + size > get_settings().spill_after_bytes:
        if rows is None:
            rows = bulk.spill(piece, alias)
        if rows is not None:
            return _PieceOnCommit(bulk, alias, None, array("q", rows))
    bulk.held_bytes += size
    return _PieceOnCommit(bulk, alias, piece, None if rows is None else array("q", rows), size)


class _PieceOnCommit(NamedCallback):
    """Hands one piece of a bulk write's diffs to delivery when the transaction commits:
    from memory (``piece``), or read back from the outbox rows ``rows``."""

    __slots__ = ("alias", "bulk", "held", "piece", "rows")

    def __init__(
        self,
        bulk: _BulkCommit,
        alias: str,
        piece: list[OutgoingDiff] | None,
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
                queue.enqueue(_committed(piece, self.alias, self.rows, committed_ms))
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
    pieces at commit (reported by the transaction's last write, which runs last)."""

    def __init__(self, hooks_version: int) -> None:
        #: ``transactions.hooks_version()`` when ``held_bytes`` was last right: it
        #: changes when a savepoint's rollback discards pieces.
        self.hooks_version = hooks_version
        self.held_bytes = 0
        #: The newest write entry of this transaction. Write entries survive savepoint
        #: rollbacks, so it waits for the commit until the transaction ends.
        self.last_write: _WriteAfterCommit | None = None
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

    def spill(self, piece: list[OutgoingDiff], alias: str) -> list[int] | None:
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
                return outbox.insert_many(piece, alias)
        except DatabaseError as error:
            _warn_no_outbox(alias, str(error).strip() or type(error).__name__)
            self.outbox_refused = True
            return None

    def deliver_spilled(self, alias: str, rows: Sequence[int], committed_ms: float) -> None:
        """Write a spilled piece to Redis after what was queued before it, then delete
        its rows. While Redis is out of reach, ``on_redis_error`` decides: ``"retry"``
        queues them behind the diffs waiting in memory; otherwise durable mode leaves
        the rows to ``flush_diffs`` and the default mode drops them."""
        items = outbox.read(alias, rows)
        if not items:
            return
        for diff in items:
            diff.committed_ms = committed_ms
        if self.outage is None:
            self.outage = self._write_queue_first()
        if self.outage is None:
            try:
                # The queue's write: refusals (set aside) and outages as for any diff.
                refused = queue.write_batch(items)
            except Exception as error:  # any client error: the database has committed
                availability.trip()
                self.outage = error
            else:
                queue.settle_outbox_rows(items, refused)
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
            result = queue.write_queued()
        except DiffsWriteError as error:  # "raise" mode: the queue logged and dropped them
            self.raised = error
            return error
        if result.waiting and get_settings().on_redis_error == "retry":
            return _StillWaiting(f"{result.waiting} diff(s) wait in memory for Redis")
        return None

    def _during_outage(self, items: list[OutgoingDiff]) -> None:
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

    def _hand_over(self, items: list[OutgoingDiff]) -> None:
        """Queue ``items`` (the queue's retry buffer bounds what stays in memory)."""
        if not get_settings().durable:
            # From here memory is their home, as for any diff of the default mode.
            outbox.forget(_rows_of(items))
            for item in items:
                item.outbox_row = None
        queue.enqueue(items)
        try:
            queue.write_queued()
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


def _rows_of(items: Sequence[OutgoingDiff]) -> list[tuple[str, int]]:
    return [item.outbox_row for item in items if item.outbox_row is not None]


def _remember(named: list[str], items: list[OutgoingDiff]) -> None:
    # The first few by name, for the log line; not the diffs (they can be large).
    for diff in items[: max(0, losses.NAMED_IN_LOGS - len(named))]:
        named.append(f"{diff.label} pk={diff.object_pk}")


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
    back: its newest write entry still waits for the commit (at or near the end)."""
    if bulk.finished or bulk.last_write is None:
        return False
    return transactions.is_waiting(connection, bulk.last_write)


def _keep_write_last(
    connection: BaseDatabaseWrapper, *, robust: bool, bulk: _BulkCommit | None = None
) -> _WriteAfterCommit:
    # A new write goes after the new diff and the previous one stands down, rather than
    # moving entries around: captureOnCommitCallbacks() slices the callbacks by position.
    previous: _WriteAfterCommit | None = getattr(connection, _LAST_WRITE, None)
    if previous is not None:
        previous.active = False
        if bulk is None and previous.bulk is not None and _still_open(previous.bulk, connection):
            bulk = previous.bulk  # a save after a bulk write: its write reports for both
    last_write = _WriteAfterCommit(bulk)
    if bulk is not None:
        bulk.last_write = last_write  # the newest: _still_open() finds it at the end
    setattr(connection, _LAST_WRITE, last_write)
    transactions.on_commit_outside_savepoints(connection, last_write, robust=robust)
    return last_write


_LAST_WRITE = "_diffs_last_write"
_BULK_COMMIT = "_diffs_bulk_commit"
