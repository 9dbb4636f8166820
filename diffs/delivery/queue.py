"""The queue of committed diffs waiting for Redis, and what happens when Redis fails.

Every committed diff enters one process-wide queue, in the order its transaction
committed, and the queue is written as a whole: one script call (one round trip) per
chunk writes everything waiting. When Redis fails, ``on_redis_error`` decides:

* ``"retry"`` (default): the diffs stay queued (at most ``retry_buffer_size`` diffs and
  ``queue_bytes``; the oldest are dropped beyond that, see ``diffs.delivery.losses``)
  and go out, still in order, with the next write after the pause that follows an
  outage (``diffs.availability``), or with ``flush_diffs()``;
* ``"log"``: they are logged and dropped;
* ``"raise"``: they are dropped and :class:`~diffs.exceptions.DiffsWriteError` is
  raised to the code that saved (after its database transaction committed).

Either way the failure is logged on the ``diffs`` logger with models and pks. A diff
with an outbox row (durable mode) keeps it until Redis has the diff, so dropping one
from memory never loses it.

A diff Redis can never take (a fixed score that aged out of the window while it
waited, a key of another type in its place) is set aside with an ERROR instead of
blocking the diffs behind it. A forked child starts with an empty queue: what was
queued belongs to the parent, which writes it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from diffs import availability
from diffs.clock import fixed_score_problem, now_ms
from diffs.connection import (
    REDIS_ERRORS,
    describe_redis_error,
    get_connection,
    may_have_reached_redis,
)
from diffs.delivery import announce, losses, outbox, store
from diffs.delivery.record import OutgoingDiff
from diffs.diff import looks_like_member
from diffs.exceptions import DiffsWriteError
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: How long :func:`unwritten` waits for the queue's lock before counting without it.
UNWRITTEN_LOCK_WAIT_SECONDS = 0.05


@dataclass(frozen=True)
class Written:
    """What one write of the queue did: diffs written, and diffs still waiting."""

    written: int
    waiting: int


class _Queue:
    def __init__(self) -> None:
        self.items: collections.deque[OutgoingDiff] = collections.deque()
        # Appends are short; sending holds this lock so that two threads never write
        # the same diffs at once or out of order.
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        #: About how many bytes ``items`` hold (``OutgoingDiff.memory_bytes``).
        self.bytes = 0
        #: True from a failed write to the next successful one: the queue is a retry
        #: buffer then, and retry_buffer_size bounds it.
        self.failing = False
        #: How many diffs the write in progress carries (0: none). Set with ``lock``
        #: held as they leave ``items`` and as they go back, so :func:`unwritten` never
        #: counts a diff twice.
        self.sending = 0


_queue = _Queue()

#: Called after a failed write left diffs queued for a retry: the write-behind thread
#: (``diffs.delivery.background``) adds its wake-up, so that it retries after the pause
#: even when the write that failed was another thread's. A list, not an import: that
#: module imports this one.
failure_callbacks: list[Callable[[], None]] = []


def enqueue(diffs: Iterable[OutgoingDiff]) -> None:
    """Append committed diffs to the queue, in commit order (no I/O)."""
    with _queue.lock:
        for diff in diffs:
            _queue.items.append(diff)
            _queue.bytes += diff.memory_bytes
        dropped = _trim() if _queue.failing else []
    if dropped:
        losses.note_dropped(dropped)


def _trim() -> list[OutgoingDiff]:
    # Called with the lock held. The oldest go first: they are the likeliest to be
    # past max_element_age by the time Redis is back.
    conf = get_settings()
    dropped = []
    while _queue.items and (
        len(_queue.items) > conf.retry_buffer_size or _queue.bytes > conf.queue_bytes
    ):
        diff = _queue.items.popleft()
        _queue.bytes -= diff.memory_bytes
        dropped.append(diff)
    return dropped


def waiting() -> int:
    """How many diffs wait in this process's memory for Redis."""
    return len(_queue.items)


def waiting_bytes() -> int:
    """About how many bytes the diffs waiting in memory hold."""
    return _queue.bytes


def is_failing() -> bool:
    """True from a failed write to the next successful one."""
    return _queue.failing


def is_busy() -> bool:
    """True while diffs wait or a write of them is in flight."""
    return bool(_queue.items) or _queue.send_lock.locked()


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


def clear() -> list[OutgoingDiff]:
    """Empty the queue and return what it held (for tests and shutdown).

    A write already in flight (the write-behind thread's) finishes first.
    """
    with _queue.send_lock, _queue.lock:
        diffs = list(_queue.items)
        _queue.items.clear()
        _queue.bytes = 0
        _queue.failing = False
        losses.forget()
    availability.reset()
    return diffs


def write_queued(*, force: bool = False) -> Written:
    """Write every queued diff, in order, in as few round trips as their size allows.

    Without ``force``, a write during the pause after an outage (``diffs.availability``)
    leaves the diffs queued (``on_redis_error = "retry"``). Raises
    :class:`DiffsWriteError` only with ``on_redis_error = "raise"``.
    """
    if not is_busy():
        return Written(0, 0)
    if not force and _paused():
        return Written(0, waiting())
    # Taken even when the queue looks empty: another thread (the write-behind one) may
    # be sending a batch, and this returns only once what was queued before it is in
    # Redis, or back in the queue after a failure. diff_recorded goes out after the lock.
    with announce.deferred(), _queue.send_lock:
        if not force and _paused():
            return Written(0, waiting())  # the write we waited for just failed
        batch = _take_all()
        if not batch:
            return Written(0, waiting())
        try:
            set_aside = write_batch(batch)
        except Exception as error:
            _handle_failure(batch, error)
            return Written(0, waiting())
        finally:
            _queue.sending = 0
        availability.reset()
        _queue.failing = False
        losses.confirm_dropped()
    settle_outbox_rows(batch, set_aside)
    return Written(len(batch) - len(set_aside), waiting())


def _paused() -> bool:
    # Only a retry buffer waits out the pause; with "log" or "raise" every write is
    # tried, since the diffs are dropped (or the caller told) when it fails.
    return availability.remaining() > 0 and get_settings().on_redis_error == "retry"


def _take_all() -> list[OutgoingDiff]:
    with _queue.lock:
        batch = list(_queue.items)
        _queue.items.clear()
        _queue.bytes = 0
        _queue.sending = len(batch)
    return batch


def _forget_parent_state() -> None:
    # In a forked child: the parent writes what it had queued, and a thread holding the
    # queue's locks did not come along.
    global _queue
    _queue = _Queue()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_state)


def write_batch(batch: Sequence[OutgoingDiff]) -> list[tuple[OutgoingDiff, str]]:
    """Write ``batch`` to Redis now, in order; return the diffs set aside (with why)
    because Redis can never take them, after logging them.

    Raises what the write raised when Redis is out of reach: the caller keeps the batch
    (writes are idempotent, so what did reach Redis is stored once when retried).
    """
    now = now_ms()
    refused = [(diff, why) for diff in batch if (why := refusal(diff, now)) is not None]
    set_aside = {id(diff) for diff, _ in refused}
    accepted = [diff for diff in batch if id(diff) not in set_aside]
    client = get_connection()
    written = [diff.as_written(now) for diff in accepted]
    try:
        scores = store.write_many(client, written)
    except REDIS_ERRORS as error:
        if not availability.is_refusal(error):
            raise
        # Redis refused one of them for good (a key of another type in its place): write
        # them one by one to find which, instead of retrying the lot forever. Those the
        # failed call wrote before it stopped are looked for, not written again.
        for diff in accepted:
            diff.resent = True
        refused += _write_one_by_one(client, accepted, now)
    else:
        announce.announce(written, scores)
    if refused:
        _log_set_aside(refused)
    return refused


def write_one(client: Any, diff: OutgoingDiff) -> float:
    """Write one diff now, outside the queue (``Model.diffs.create()``); return its
    score. Redis errors propagate."""
    score = store.write_one(client, diff)
    announce.announce([diff], [score])
    return score


def refusal(diff: OutgoingDiff, now: float) -> str | None:
    """Why Redis can never take ``diff`` (a fixed score that aged out of the window
    while it waited, a member that is not ours), or None."""
    if diff.is_birth_only:
        return None  # an object's birth, with no diff: Redis always takes it
    if diff.score is not None:
        problem = fixed_score_problem(diff.score, get_settings().max_element_age, now)
        if problem is not None:
            return f"its fixed timestamp {diff.score!r}: {problem}"
    if not looks_like_member(diff.member):
        return "its member is not django-diffs JSON"
    return None


def _write_one_by_one(
    client: Any, diffs: Sequence[OutgoingDiff], now: float
) -> list[tuple[OutgoingDiff, str]]:
    refused = []
    for diff in diffs:
        written = diff.as_written(now)
        try:
            score = store.write_one(client, written)
        except REDIS_ERRORS as error:
            if not availability.is_refusal(error):
                raise
            refused.append((diff, f"Redis refused it: {error}"))
        else:
            announce.announce([written], [score])
    return refused


def _log_set_aside(refused: Sequence[tuple[OutgoingDiff, str]]) -> None:
    for diff, why in refused[: losses.NAMED_IN_LOGS]:
        kept = " Its outbox row is kept, set aside." if diff.outbox_row is not None else ""
        logger.error(
            "Set aside the diff of %s pk=%s, which Redis can never take (%s). The change "
            "itself was saved; the diffs behind it were written.%s",
            diff.label,
            diff.object_pk,
            why,
            kept,
        )
    if len(refused) > losses.NAMED_IN_LOGS:
        more = len(refused) - losses.NAMED_IN_LOGS
        logger.error("Set aside %d more diff(s) for the same reasons.", more)


def _handle_failure(batch: list[OutgoingDiff], error: Exception) -> None:
    conf = get_settings()
    mode = conf.on_redis_error
    cause = describe_redis_error(error)
    names = losses.name(batch)
    availability.trip()
    if mode == "retry":
        dropped = _keep_for_retry(batch, error)
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
            losses.note_dropped(dropped)
        for callback in failure_callbacks:
            callback()
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


def _keep_for_retry(batch: list[OutgoingDiff], error: Exception) -> list[OutgoingDiff]:
    """Put ``batch`` back at the head of the queue, for the next write to retry; return
    the oldest diffs that no longer fit."""
    unsure = may_have_reached_redis(error)
    for diff in batch:
        diff.late = True
        diff.resent = True  # an earlier call of the failed write may have stored it
        diff.maybe_stored = diff.maybe_stored or unsure
    with _queue.lock:
        _queue.items.extendleft(reversed(batch))
        _queue.bytes += sum(diff.memory_bytes for diff in batch)
        _queue.sending = 0  # back in items: counted once
        _queue.failing = True
        return _trim()


def _all_in_outbox(diffs: Sequence[OutgoingDiff]) -> bool:
    return all(diff.outbox_row is not None for diff in diffs)


def settle_outbox_rows(
    batch: Sequence[OutgoingDiff], refused: Sequence[tuple[OutgoingDiff, str]]
) -> None:
    """After ``batch`` was written: delete the outbox rows of the diffs Redis now has,
    and set aside (keep, with the reason) those of the diffs it ``refused``."""
    skipped = {id(diff) for diff, _ in refused}
    done = [diff.outbox_row for diff in batch if diff.outbox_row and id(diff) not in skipped]
    if done:
        outbox.forget(done)
    kept = [(*diff.outbox_row, why) for diff, why in refused if diff.outbox_row is not None]
    if kept:
        outbox.set_aside(kept)
