"""Write-behind: one background thread per process writes the queue.

With ``write_behind``, the saving thread only queues: the thread writes, so ``save()``
never waits for Redis, and diffs committed while a write is in flight go together in
the next one. Past ``queue_bytes`` waiting, a saving thread writes itself (waiting for
the write in flight first), so a slow Redis slows the saves instead of filling memory.
Reads through django-diffs in the same process write first
(:func:`write_before_read`), so a process always reads its own diffs. A forked child
starts without the thread; its first commit starts one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from diffs import availability
from diffs.delivery import queue
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: How long the thread lets diffs gather before each write.
WRITE_BEHIND_WINDOW_SECONDS = 0.005


def write_soon() -> None:
    """Write the queue now or, with ``write_behind``, wake the background thread.

    Past ``queue_bytes`` waiting (a slow write in flight), a write-behind process writes
    in the saving thread instead: it waits for that write, so memory stays bounded.
    """
    conf = get_settings()
    over_budget = queue.waiting_bytes() > conf.queue_bytes and not queue.is_failing()
    if not conf.write_behind or over_budget:
        queue.write_queued()
    else:
        _thread.wake()


def write_before_read() -> None:
    """With ``write_behind``, write what this process queued, so a read sees it (and
    wait for a write the background thread has in flight)."""
    if needs_write_before_read():
        queue.write_queued()


def needs_write_before_read() -> bool:
    """Whether :func:`write_before_read` has anything to do now (cheap: no I/O)."""
    return queue.is_busy() and get_settings().write_behind


class _BackgroundThread:
    """The write-behind thread: writes whenever woken, and retries after a failure."""

    def __init__(self) -> None:
        self.wanted = threading.Event()
        self.start_lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def wake(self, *, or_write: bool = True) -> None:
        """Have the thread write soon (starting it if needed). Where no thread can start
        (at interpreter shutdown), write here instead, unless ``or_write`` is False."""
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
                        if or_write:
                            queue.write_queued()
                    else:
                        _thread_started()

    def _run(self) -> None:
        while True:
            # Diffs still queued (Redis failed) are retried once the pause is over.
            pause = max(availability.remaining(), 0.01) if queue.waiting() else None
            self.wanted.wait(timeout=pause)
            # The diffs of the saves made meanwhile join this write: one round trip
            # (and one thread wake-up) for all of them instead of one each.
            time.sleep(WRITE_BEHIND_WINDOW_SECONDS)
            # Cleared before writing: a diff queued after this is in this write or
            # wakes the next one.
            self.wanted.clear()
            try:
                queue.write_queued()
            except Exception:  # on_redis_error="raise" is refused with write_behind
                logger.exception("The django-diffs write-behind thread failed to write.")


_thread = _BackgroundThread()


def _retry_after_failure() -> None:
    # A write failed, maybe a reader's while the thread slept with nothing to do: wake
    # it, so it retries after the pause. Never write here: the failed write's caller
    # still holds the queue's send lock.
    if get_settings().write_behind:
        _thread.wake(or_write=False)


queue.failure_callbacks.append(_retry_after_failure)

#: Called each time the write-behind thread starts (so again in a forked child):
#: :mod:`diffs.delivery.exit_hooks` adds the installation of its hooks when it is
#: imported, so that the exits that would skip the waiting diffs (SIGTERM, the end of a
#: multiprocessing child) write them first. A list, not an import: exit_hooks imports
#: this module.
thread_start_callbacks: list[Callable[[], None]] = []


def _thread_started() -> None:
    for callback in thread_start_callbacks:
        callback()


def _forget_parent_thread() -> None:
    # In a forked child: the parent's thread did not come along.
    global _thread
    _thread = _BackgroundThread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_thread)
