"""Getting committed diffs into Redis, in commit order, even across an outage.

Every committed diff enters one process-wide queue, in the order its transaction
committed, and the queue is flushed as a whole: one script call (one round trip)
writes everything waiting. When Redis fails, ``on_redis_error`` decides:

* ``"retry"`` (default): the diffs stay queued (at most ``retry_buffer_size`` diffs and
  ``queue_bytes``; the oldest are dropped beyond that, and the loss is logged with its
  count) and go out, still in order, with the next flush after the pause that follows
  an outage (``diffs.availability``), or with ``flush_diffs()``;
* ``"log"``: they are logged and dropped;
* ``"raise"``: they are dropped and :class:`~diffs.exceptions.DiffsWriteError` is
  raised to the code that saved (after its database transaction committed).

Either way the failure is logged on the ``diffs`` logger with models and pks. In
durable mode each diff also has an outbox row, deleted once Redis has the diff, so
dropping one from memory never loses it.

A diff Redis can never take (a fixed score that aged out of the window while it
waited, a key of another type in its place) is set aside with an ERROR instead of
blocking the diffs behind it. A write that timed out may still have reached Redis: the
diffs it held that are dropped later are checked once Redis answers, and only those it
does not have are reported lost.

With ``write_behind``, the saving thread only queues: one background thread per
process flushes, so ``save()`` never waits for Redis and diffs committed while a write
is in flight go together in the next one. Past ``queue_bytes`` waiting, a saving thread
writes itself (waiting for the write in flight first), so a slow Redis slows the
saves instead of filling memory. Reads through django-diffs in the same
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from diffs import availability, outbox, store
from diffs.advice import connection_advice
from diffs.clock import fixed_score_problem, now_ms
from diffs.connection import REDIS_ERRORS, get_connection, underlying_error
from diffs.diff import looks_like_member, with_original_time
from diffs.exceptions import DiffsWriteError
from diffs.payload import BIRTH_ONLY, PendingDiff
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: With ``write_behind``, how long the writer lets diffs gather before each write.
WRITE_BEHIND_WINDOW_SECONDS = 0.005

#: A diff that reaches Redis this much later than its commit carries its commit time.
LATE_AFTER_MS = 1000.0

#: How long :func:`unwritten` waits for the queue's lock before counting without it.
UNWRITTEN_LOCK_WAIT_SECONDS = 0.05

#: How many models/pks a log line names before it says "and N more".
_NAMED_IN_LOGS = 10

#: Most dropped diffs remembered until Redis answers and says whether it has them.
UNCONFIRMED_LIMIT = 10_000

#: What a queued diff costs in memory beyond its text (the objects that hold it).
_ITEM_OVERHEAD_BYTES = 400


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
    #: True once a write of it failed in a way that may have reached Redis (a timeout):
    #: should it be dropped, Redis is asked whether it has it before it is called lost.
    maybe_stored: bool = False

    @property
    def size(self) -> int:
        """About how many bytes this diff holds in memory while it waits."""
        pending = self.pending
        text = len(pending.member) + len(pending.feed_member) + len(pending.key)
        return text + len(pending.feed_key) + _ITEM_OVERHEAD_BYTES

    def write(self, now: float) -> store.Write:
        """What the write script takes for this diff, ``now`` being the flush's time."""
        pending = self.pending
        member = pending.member
        late = self.late or now - self.committed_ms > LATE_AFTER_MS
        if member != BIRTH_ONLY and pending.timestamp is None and late:
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
        #: About how many bytes ``items`` hold (``Queued.size``).
        self.bytes = 0
        #: Diffs dropped from memory after a write whose fate is unknown (a timeout):
        #: ``(feed key, feed member, label, pk)``, checked once Redis answers.
        self.unconfirmed: collections.deque[tuple[str, str, str, str]] = collections.deque()
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
        for item in items:
            _queue.items.append(item)
            _queue.bytes += item.size
        dropped = _trim() if _queue.failing else []
    if dropped:
        _note_dropped(dropped)


def _trim() -> list[Queued]:
    # Called with the lock held. The oldest go first: they are the likeliest to be
    # past max_element_age by the time Redis is back.
    conf = get_settings()
    dropped = []
    while _queue.items and (
        len(_queue.items) > conf.retry_buffer_size or _queue.bytes > conf.queue_bytes
    ):
        item = _queue.items.popleft()
        _queue.bytes -= item.size
        dropped.append(item)
    return dropped


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
        _queue.bytes = 0
        _queue.unconfirmed.clear()
        _queue.failing = False
    availability.reset()
    return items


def flush(*, force: bool = False) -> FlushResult:
    """Write every queued diff, in order, in as few round trips as their size allows.

    Without ``force``, a flush during the pause after an outage (``diffs.availability``)
    leaves the diffs queued (``on_redis_error = "retry"``). Raises
    :class:`DiffsWriteError` only with ``on_redis_error = "raise"``.
    """
    if not _queue.items and not _queue.send_lock.locked():
        return FlushResult(0, 0)
    if not force and _paused():
        return FlushResult(0, waiting())
    # Taken even when the queue looks empty: another thread (the write-behind one) may
    # be sending a batch, and a flush returns only once what was queued before it is
    # in Redis, or back in the queue after a failure.
    with _queue.send_lock:
        if not force and _paused():
            return FlushResult(0, waiting())  # the write we waited for just failed
        batch = _take_all()
        if not batch:
            return FlushResult(0, waiting())
        try:
            set_aside = write_now(batch)
        except Exception as error:
            _handle_failure(batch, error)
            return FlushResult(0, waiting())
        finally:
            _queue.sending = 0
        availability.reset()
        _queue.failing = False
        _confirm_dropped()
    settle_outbox_rows(batch, set_aside)
    return FlushResult(len(batch) - len(set_aside), waiting())


def _paused() -> bool:
    # Only a retry buffer waits out the pause; with "log" or "raise" every write is
    # tried, since the diffs are dropped (or the caller told) when it fails.
    return availability.remaining() > 0 and get_settings().on_redis_error == "retry"


def _take_all() -> list[Queued]:
    with _queue.lock:
        batch = list(_queue.items)
        _queue.items.clear()
        _queue.bytes = 0
        _queue.sending = len(batch)
    return batch


def flush_soon() -> None:
    """Flush now or, with ``write_behind``, wake the background writer and return.

    Past ``queue_bytes`` waiting (a slow write in flight), a write-behind process writes
    in the saving thread instead: it waits for that write, so memory stays bounded.
    """
    conf = get_settings()
    over_budget = _queue.bytes > conf.queue_bytes and not _queue.failing
    if not conf.write_behind or over_budget:
        flush()
    else:
        _writer.wake()


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
            pause = max(availability.remaining(), 0.01) if _queue.items else None
            self.wanted.wait(timeout=pause)
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


#: Called each time the write-behind thread starts (so again in a forked child):
#: :mod:`diffs.exit_hooks` adds the installation of its hooks when it is imported, so
#: that the exits that would skip the waiting diffs (SIGTERM, the end of a
#: multiprocessing child) write them first. A list, not an import: exit_hooks imports
#: this module.
writer_start_callbacks: list[Callable[[], None]] = []


def _writer_started() -> None:
    for callback in writer_start_callbacks:
        callback()


def _forget_parent_state() -> None:
    # In a forked child: the parent writes what it had queued, and its threads (the
    # writer, a thread holding a lock) did not come along.
    global _queue, _writer
    _queue = _Queue()
    _writer = _BackgroundWriter()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_state)


def write_now(batch: Sequence[Queued]) -> list[tuple[Queued, str]]:
    """Write ``batch`` to Redis now, in order; return the diffs set aside (with why)
    because Redis can never take them, after logging them.

    Raises what the write raised when Redis is out of reach: the caller keeps the batch
    (writes are idempotent, so what did reach Redis is stored once when retried).
    """
    now = now_ms()
    refused = [(item, why) for item in batch if (why := refusal(item, now)) is not None]
    set_aside = {id(item) for item, _ in refused}
    writes = [item for item in batch if id(item) not in set_aside]
    client = get_connection()
    try:
        store.write_many(client, [item.write(now) for item in writes])
    except REDIS_ERRORS as error:
        if not availability.is_refusal(error):
            raise
        # Redis refused one of them for good (a key of another type in its place): write
        # them one by one to find which, instead of retrying the lot forever.
        refused += _write_one_by_one(client, writes, now)
    if refused:
        _log_set_aside(refused)
    return refused


def refusal(item: Queued, now: float) -> str | None:
    """Why Redis can never take ``item`` (a fixed score that aged out of the window
    while it waited, a member that is not ours), or None."""
    pending = item.pending
    if pending.member == BIRTH_ONLY:
        return None  # an object's birth, with no diff: Redis always takes it
    if pending.timestamp is not None:
        problem = fixed_score_problem(pending.timestamp, get_settings().max_element_age, now)
        if problem is not None:
            return f"its fixed timestamp {pending.timestamp!r}: {problem}"
    if not looks_like_member(pending.member):
        return "its member is not django-diffs JSON"
    return None


def _write_one_by_one(
    client: Any, items: Sequence[Queued], now: float
) -> list[tuple[Queued, str]]:
    refused = []
    for item in items:
        try:
            store.write_many(client, [item.write(now)])
        except REDIS_ERRORS as error:
            if not availability.is_refusal(error):
                raise
            refused.append((item, f"Redis refused it: {error}"))
    return refused


def _log_set_aside(refused: Sequence[tuple[Queued, str]]) -> None:
    for item, why in refused[:_NAMED_IN_LOGS]:
        kept = " Its outbox row is kept, set aside." if item.outbox_row is not None else ""
        logger.error(
            "Set aside the diff of %s pk=%s, which Redis can never take (%s). The change "
            "itself was saved; the diffs behind it were written.%s",
            item.pending.label,
            item.pending.pk,
            why,
            kept,
        )
    if len(refused) > _NAMED_IN_LOGS:
        more = len(refused) - _NAMED_IN_LOGS
        logger.error("Set aside %d more diff(s) for the same reasons.", more)


def _handle_failure(batch: list[Queued], error: Exception) -> None:
    conf = get_settings()
    mode = conf.on_redis_error
    cause = _describe(error)
    names = _name(batch)
    availability.trip()
    if mode == "retry":
        unsure = _may_have_reached_redis(error)
        for item in batch:
            item.late = True
            item.maybe_stored = item.maybe_stored or unsure
        with _queue.lock:
            _queue.items.extendleft(reversed(batch))
            _queue.bytes += sum(item.size for item in batch)
            _queue.sending = 0  # back in items: counted once
            _queue.failing = True
            dropped = _trim()
        logger.error(
            "Could not write %d diff(s) to Redis (%s): %s. The database changes were "
            "saved; the diffs wait in memory (%d waiting) and are written, in order, "
            "once Redis answers, by this process (its next write or read, or "
            "diffs.flush_diffs() called in it; manage.py flush_diffs runs in a process of "
            "its own and cannot reach them).",
            len(batch),
            cause,
            names,
            waiting(),
            exc_info=not isinstance(error, REDIS_ERRORS),
        )
        if dropped:
            _note_dropped(dropped)
        if conf.write_behind:
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


def _may_have_reached_redis(error: Exception) -> bool:
    """False when ``error`` says the write never left this process (no connection could
    be made); True when Redis may have run it before the failure (a timeout)."""
    cause = underlying_error(error)
    if isinstance(cause, redis.ConnectionError) and "connecting" in str(cause):
        return False
    return not (isinstance(error, REDIS_ERRORS) and "cannot be connected" in str(error))


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


def _note_dropped(dropped: list[Queued]) -> None:
    """Report diffs dropped from a full retry buffer: lost now, or, for those a write may
    have brought to Redis (a timeout), lost only if Redis does not have them once it
    answers."""
    # Births are not diffs: nobody misses one (a lost birth leaves an earlier row's
    # diffs of a reused pk readable, until they expire).
    dropped = [item for item in dropped if item.pending.member != BIRTH_ONLY]
    if not dropped:
        return
    if _all_in_outbox(dropped):
        logger.warning(
            "%d diff(s) no longer wait in memory (retry_buffer_size or queue_bytes "
            "reached): %s. They are still in the outbox table; manage.py flush_diffs "
            "writes them.",
            len(dropped),
            _name(dropped),
        )
        return
    unsure = [item for item in dropped if item.maybe_stored]
    with _queue.lock:
        room = max(0, UNCONFIRMED_LIMIT - len(_queue.unconfirmed))
        _queue.unconfirmed.extend(_identity(item) for item in unsure[:room])
    if unsure[:room]:
        logger.warning(
            "%d diff(s) no longer wait in memory (retry_buffer_size or queue_bytes "
            "reached): %s. A write of them timed out and may have reached Redis; once "
            "Redis answers, those it does not have are reported lost.",
            len(unsure[:room]),
            _name(unsure[:room]),
        )
    checked = {id(item) for item in unsure[:room]}
    lost = [item for item in dropped if id(item) not in checked]
    if lost:
        _log_lost(dropped_count=len(lost), names=_name(lost))


def _identity(item: Queued) -> tuple[str, str, str, str]:
    pending = item.pending
    return pending.feed_key, pending.feed_member, pending.label, pending.pk


def _log_lost(*, dropped_count: int, names: str, confirmed: bool = False) -> None:
    conf = get_settings()
    when = (
        "Redis does not have them: they were dropped from memory while it was failing"
        if confirmed
        else "Redis is still failing"
    )
    logger.error(
        "Lost %d diff(s): %s, with more than retry_buffer_size (%d) diffs or queue_bytes "
        "(%d bytes) waiting: %s. Clients syncing these objects must reload them; set "
        "DIFFS_SETTINGS['durable'] = True to keep diffs across outages.",
        dropped_count,
        when,
        conf.retry_buffer_size,
        conf.queue_bytes,
        names,
    )


def _confirm_dropped() -> None:
    """Once Redis answers: report as lost only the dropped diffs it does not have."""
    with _queue.lock:
        unsure = list(_queue.unconfirmed)
        _queue.unconfirmed.clear()
    if not unsure:
        return
    try:
        pipe = get_connection().pipeline(transaction=False)
        for feed, member, _, _ in unsure:
            pipe.zscore(feed, member)
        found = pipe.execute()
    except REDIS_ERRORS:
        found = [None] * len(unsure)  # cannot tell: count them lost rather than hide it
    missing = [entry for entry, score in zip(unsure, found, strict=True) if score is None]
    if missing:
        named = ", ".join(f"{label} pk={pk}" for _, _, label, pk in missing[:_NAMED_IN_LOGS])
        more = len(missing) - _NAMED_IN_LOGS
        named += f" and {more} more" if more > 0 else ""
        _log_lost(dropped_count=len(missing), names=named, confirmed=True)


def settle_outbox_rows(batch: Sequence[Queued], refused: Sequence[tuple[Queued, str]]) -> None:
    """After ``batch`` was written: delete the outbox rows of the diffs Redis now has,
    and set aside (keep, with the reason) those of the diffs it ``refused``."""
    skipped = {id(item) for item, _ in refused}
    done = [item.outbox_row for item in batch if item.outbox_row and id(item) not in skipped]
    if done:
        outbox.forget(done)
    kept = [(*item.outbox_row, why) for item, why in refused if item.outbox_row is not None]
    if kept:
        outbox.set_aside(kept)
