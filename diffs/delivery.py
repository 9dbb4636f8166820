"""Getting committed diffs into Redis, in commit order, even across an outage.

Every committed diff enters one process-wide queue, in the order its transaction
committed, and the queue is flushed as a whole: one script call (one round trip)
writes everything waiting. When Redis fails, ``on_redis_error`` decides:

* ``"retry"`` (default): the diffs stay queued (at most ``retry_buffer_size``; the
  oldest are dropped beyond that, and the loss is logged with its count) and go out,
  still in order, with the next flush after a short pause, or with ``flush_diffs()``;
* ``"log"``: they are logged and dropped;
* ``"raise"``: they are dropped and :class:`~diffs.exceptions.DiffsWriteError` is
  raised to the code that saved (after its database transaction committed).

Either way the failure is logged on the ``diffs`` logger with models and pks. In
durable mode each diff also has an outbox row, deleted once Redis has the diff, so
dropping one from memory never loses it.

With ``write_behind``, the saving thread only queues: one background thread per
process flushes, so ``save()`` never waits for Redis and diffs committed while a write
is in flight go together in the next one. Reads through django-diffs in the same
process flush first (:func:`flush_before_read`), so a process always reads its own
diffs. A forked child starts with an empty queue: what was queued belongs to the
parent, which writes it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis

from diffs import outbox, store
from diffs.advice import connection_advice
from diffs.clock import now_ms
from diffs.connection import REDIS_ERRORS, get_connection, underlying_error
from diffs.diff import with_original_time
from diffs.exceptions import DiffsWriteError
from diffs.payload import PendingDiff
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: After a failed write, regular flushes wait this long before trying Redis again, so
#: an outage does not add a socket timeout to every request. ``flush_diffs()`` does not.
RETRY_PAUSE_SECONDS = 1.0

#: With ``write_behind``, how long the writer lets diffs gather before each write.
WRITE_BEHIND_WINDOW_SECONDS = 0.005

#: A diff that reaches Redis this much later than its commit carries its commit time.
LATE_AFTER_MS = 1000.0

#: How long :func:`unwritten` waits for the queue's lock before counting without it.
UNWRITTEN_LOCK_WAIT_SECONDS = 0.05

#: How many models/pks a log line names before it says "and N more".
_NAMED_IN_LOGS = 10


@dataclass
class Queued:
    """A committed diff waiting for Redis."""

    pending: PendingDiff
    #: Epoch ms (this process's clock) when its transaction committed.
    committed_ms: float = field(default_factory=now_ms)
    #: ``(database alias, row id)`` of its outbox row, in durable mode.
    outbox_row: tuple[str, int] | None = None
    #: True once a write of it failed: it is stored with its commit time.
    late: bool = False

    def write(self, now: float) -> store.Write:
        """What the write script takes for this diff, ``now`` being the flush's time."""
        pending = self.pending
        member = pending.member
        if pending.timestamp is None and (self.late or now - self.committed_ms > LATE_AFTER_MS):
            member = with_original_time(member, self.committed_ms)
        return store.Write(
            pending.key, pending.feed_key, member, pending.feed_member, pending.timestamp
        )


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: diffs written, and diffs still waiting in memory."""

    written: int
    waiting: int


class _Queue:
    def __init__(self) -> None:
        self.items: collections.deque[Queued] = collections.deque()
        # Appends are short; sending holds this lock so that two threads never write
        # the same diffs at once or out of order.
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.paused_until = 0.0
        #: True from a failed write to the next successful one: the queue is a retry
        #: buffer then, and retry_buffer_size bounds it.
        self.failing = False
        #: How many diffs the write in progress carries (0: none). Set with ``lock``
        #: held as they leave ``items`` and as they go back, so :func:`unwritten` never
        #: counts a diff twice.
        self.sending = 0


_queue = _Queue()


def enqueue(items: Iterable[Queued]) -> None:
    """Append committed diffs to the queue, in commit order (no I/O)."""
    with _queue.lock:
        _queue.items.extend(items)
        dropped = _trim() if _queue.failing else []
    if dropped:
        _log_dropped(dropped)


def _trim() -> list[Queued]:
    # Called with the lock held. The oldest go first: they are the likeliest to be
    # past max_element_age by the time Redis is back.
    overflow = len(_queue.items) - get_settings().retry_buffer_size
    return [_queue.items.popleft() for _ in range(max(overflow, 0))]


def waiting() -> int:
    """How many diffs wait in this process's memory for Redis."""
    return len(_queue.items)


def unwritten() -> int:
    """How many diffs this process holds that Redis has not confirmed: those waiting,
    and those of a write in progress (what an exit that cannot wait would lose)."""
    # The lock keeps the two counts consistent. A signal handler may run in a thread that
    # holds it (interrupted in enqueue()): after a moment, count without it.
    locked = _queue.lock.acquire(timeout=UNWRITTEN_LOCK_WAIT_SECONDS)
    try:
        return len(_queue.items) + _queue.sending
    finally:
        if locked:
            _queue.lock.release()


def clear() -> list[Queued]:
    """Empty the queue and return what it held (for tests and shutdown).

    A write already in flight (the write-behind thread's) finishes first.
    """
    with _queue.send_lock, _queue.lock:
        items = list(_queue.items)
        _queue.items.clear()
        _queue.paused_until = 0.0
        _queue.failing = False
    return items


def flush(*, force: bool = False) -> FlushResult:
    """Write every queued diff, in order, in one round trip per 500 diffs.

    Without ``force``, a flush within ``RETRY_PAUSE_SECONDS`` of a failed one (in
    ``"retry"`` mode) leaves the diffs queued. Raises :class:`DiffsWriteError` only
    with ``on_redis_error = "raise"``.
    """
    if not _queue.items and not _queue.send_lock.locked():
        return FlushResult(0, 0)
    if not force and time.monotonic() < _queue.paused_until:
        return FlushResult(0, waiting())
    # Taken even when the queue looks empty: another thread (the write-behind one) may
    # be sending a batch, and a flush returns only once what was queued before it is
    # in Redis, or back in the queue after a failure.
    with _queue.send_lock:
        if not force and time.monotonic() < _queue.paused_until:
            return FlushResult(0, waiting())  # the write we waited for just failed
        with _queue.lock:
            batch = list(_queue.items)
            _queue.items.clear()
            _queue.sending = len(batch)
        if not batch:
            return FlushResult(0, waiting())
        try:
            _send(batch)
        except Exception as error:
            _handle_failure(batch, error)
            return FlushResult(0, waiting())
        finally:
            _queue.sending = 0
        _queue.paused_until = 0.0
        _queue.failing = False
    _forget_outbox_rows(batch)
    return FlushResult(len(batch), waiting())


def flush_at_exit() -> None:
    """Give waiting diffs one last chance when the interpreter exits normally."""
    if not _queue.items and not _queue.send_lock.locked():
        return
    try:
        result = flush(force=True)
    except Exception:  # the process is ending: report, never raise
        logger.exception("Could not write the diffs waiting at exit.")
        return
    if result.waiting:
        logger.error(
            "%d diff(s) were still waiting for Redis when the process exited; they are "
            "lost unless durable mode kept them in the outbox table.",
            result.waiting,
        )


def flush_soon() -> None:
    """Flush now or, with ``write_behind``, wake the background writer and return."""
    if get_settings().write_behind:
        _writer.wake()
    else:
        flush()


def flush_before_read() -> None:
    """With ``write_behind``, write what this process queued, so a read sees it (and
    wait for a write the background thread has in flight)."""
    if (_queue.items or _queue.send_lock.locked()) and get_settings().write_behind:
        flush()


class _BackgroundWriter:
    """The write-behind thread: flushes whenever woken, and retries after a failure."""

    def __init__(self) -> None:
        self.wanted = threading.Event()
        self.start_lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def wake(self, *, or_flush: bool = True) -> None:
        """Have the thread flush soon (starting it if needed). Where no thread can start
        (at interpreter shutdown), flush here instead, unless ``or_flush`` is False."""
        self.wanted.set()
        if self.thread is None or not self.thread.is_alive():
            with self.start_lock:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(
                        target=self._run, name="diffs-write-behind", daemon=True
                    )
                    try:
                        self.thread.start()
                    except RuntimeError:  # "can't create new thread at interpreter shutdown"
                        self.thread = None
                        if or_flush:
                            flush()
                    else:
                        _writer_started()

    def _run(self) -> None:
        while True:
            # Diffs still queued (Redis failed) are retried once the pause is over.
            self.wanted.wait(timeout=RETRY_PAUSE_SECONDS if _queue.items else None)
            # The diffs of the saves made meanwhile join this write: one round trip
            # (and one thread wake-up) for all of them instead of one each.
            time.sleep(WRITE_BEHIND_WINDOW_SECONDS)
            # Cleared before flushing: a diff queued after this is in this flush or
            # wakes the next one.
            self.wanted.clear()
            try:
                flush()
            except Exception:  # on_redis_error="raise" is refused with write_behind
                logger.exception("The django-diffs write-behind thread failed to flush.")


_writer = _BackgroundWriter()


def _writer_started() -> None:
    # From now on this process's diffs wait for the writer: have the exits that would
    # skip them (SIGTERM, the end of a multiprocessing child) write them first. Called
    # at each start, so again in a forked child; each hook is installed once per process.
    from diffs.exit_hooks import install_exit_hooks

    install_exit_hooks()


def _forget_parent_state() -> None:
    # In a forked child: the parent writes what it had queued, and its threads (the
    # writer, a thread holding a lock) did not come along.
    global _queue, _writer
    _queue = _Queue()
    _writer = _BackgroundWriter()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_state)


def _send(batch: Sequence[Queued]) -> None:
    now = time.time() * 1000
    store.write_many(get_connection(), [item.write(now) for item in batch])


def _handle_failure(batch: list[Queued], error: Exception) -> None:
    mode = get_settings().on_redis_error
    cause = _describe(error)
    names = _name(batch)
    if mode == "retry":
        for item in batch:
            item.late = True
        with _queue.lock:
            _queue.items.extendleft(reversed(batch))
            _queue.sending = 0  # back in items: counted once
            _queue.failing = True
            _queue.paused_until = time.monotonic() + RETRY_PAUSE_SECONDS
            dropped = _trim()
        logger.error(
            "Could not write %d diff(s) to Redis (%s): %s. The database changes were "
            "saved; the diffs wait in memory (%d waiting) and are written, in order, "
            "once Redis answers (next save, or manage.py flush_diffs).",
            len(batch),
            cause,
            names,
            waiting(),
            exc_info=not isinstance(error, REDIS_ERRORS),
        )
        if dropped:
            _log_dropped(dropped)
        if get_settings().write_behind:
            # The batch may have failed in a reader's flush while the writer sleeps
            # with nothing to do: wake it, so it retries after the pause.
            _writer.wake(or_flush=False)  # we hold send_lock: flush() would wait forever
        return
    kept = " They stay in the outbox table for flush_diffs." if _all_in_outbox(batch) else ""
    logger.error(
        "Could not write %d diff(s) to Redis (%s): %s. The database changes were saved; "
        "the diffs are dropped (on_redis_error=%r).%s",
        len(batch),
        cause,
        names,
        mode,
        kept,
        exc_info=not isinstance(error, REDIS_ERRORS),
    )
    if mode == "raise":
        msg = f"Could not write {len(batch)} diff(s) to Redis ({cause}): {names}."
        raise DiffsWriteError(msg) from error


def _describe(error: Exception) -> str:
    # On a cluster, the node's error (a ConnectionError, say) names the problem and the
    # cluster client's message says the whole cluster is out of reach.
    cause = underlying_error(error)
    if isinstance(cause, redis.AuthenticationError):
        return (
            "Redis refused the credentials in DIFFS_SETTINGS: check the user name and "
            "password in ['url'] or ['redis']"
        )
    if isinstance(error, REDIS_ERRORS):
        advice = connection_advice(error, get_settings().url or "")
        return f"{type(cause).__name__}: {error}" + (f" {advice}" if advice else "")

    return (
        f"{type(error).__name__}: {error}; the Redis client failed before reaching Redis, "
        "check DIFFS_SETTINGS['redis'] and ['url']"
    )


def _name(items: Sequence[Queued]) -> str:
    named = ", ".join(f"{q.pending.label} pk={q.pending.pk}" for q in items[:_NAMED_IN_LOGS])
    more = len(items) - _NAMED_IN_LOGS
    return f"{named} and {more} more" if more > 0 else named


def _all_in_outbox(items: Sequence[Queued]) -> bool:
    return all(item.outbox_row is not None for item in items)


def _log_dropped(dropped: list[Queued]) -> None:
    if _all_in_outbox(dropped):
        logger.warning(
            "%d diff(s) no longer wait in memory (retry_buffer_size reached): %s. They "
            "are still in the outbox table; manage.py flush_diffs writes them.",
            len(dropped),
            _name(dropped),
        )
        return
    logger.error(
        "Lost %d diff(s): Redis is still failing and more than retry_buffer_size (%d) "
        "diffs were waiting: %s. Clients syncing these objects must reload them; "
        "set DIFFS_SETTINGS['durable'] = True to keep diffs across outages.",
        len(dropped),
        get_settings().retry_buffer_size,
        _name(dropped),
    )


def _forget_outbox_rows(batch: Sequence[Queued]) -> None:
    rows = [item.outbox_row for item in batch if item.outbox_row is not None]
    if rows:
        outbox.forget(rows)
