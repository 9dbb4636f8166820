"""Readers that wait for the next diff, woken by one subscription per process.

Each call of the write script publishes, on the channel ``<prefix>changes``
(``KeyLayout.changes_channel``), the name of every feed it added a diff to. A process
with a reader waiting (``since(..., wait=)``, ``asince(..., wait=)``, the REST
endpoint's ``?wait=``, the event stream) runs one listener thread holding one pub/sub
connection; each message wakes the readers waiting on that feed, which then read
again with their cursor. Waiting readers never poll Redis: a hundred of them cost one
connection and one thread, and a read each time something they watch changes.

Pub/sub loses messages while the connection is down. So a reader reads again every
``FALLBACK_SECONDS`` while the listener is not subscribed (starting, or Redis out of
reach), and every reader is woken each time the subscription is made again: a lost
message delays a reader by at most that long, and never makes it miss a diff (the
cursor, not the message, says what is new). The listener stops after
``IDLE_SECONDS`` with no reader waiting.

Async readers wait on an ``asyncio.Event`` of their own loop, set from the listener
thread with ``call_soon_threadsafe``: their reads run on the loop, not in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from typing import Any, cast

from diffs.connection import get_connection
from diffs.cursors import Since
from diffs.feed import FeedPage
from diffs.layout import current_layout
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: How often (seconds) a waiting reader reads again while the listener is not subscribed.
FALLBACK_SECONDS = 1.0
#: How long (seconds) the listener stays subscribed with no reader waiting.
IDLE_SECONDS = 30.0
#: How long (seconds) the listener waits for a message before looking at its settings.
_POLL_SECONDS = 0.5
#: How often (seconds) the listener pings its connection; three times that in silence
#: and it connects again.
_PING_SECONDS = 5.0
#: How long (seconds) a finished read stays on hand for readers holding the same cursor.
_KEEP_SECONDS = 1.0
#: The pause (seconds) before subscribing again after the connection failed.
_RETRY_SECONDS = 1.0


def check_wait(wait: object) -> float:
    """``wait`` as seconds: a finite number, 0 or more.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait):
        msg = f"wait must be a number of seconds (0 or more), not {wait!r}."
        raise ValueError(msg)
    if wait < 0:
        msg = f"wait must be 0 or more seconds, not {wait!r}."
        raise ValueError(msg)
    return float(wait)


class _Waiter:
    """One waiting reader: the feeds it watches and how to wake it."""

    def __init__(self, feeds: frozenset[str], loop: asyncio.AbstractEventLoop | None) -> None:
        self.feeds = feeds
        self.loop = loop
        self.thread_event = threading.Event()
        self.loop_event = asyncio.Event() if loop is not None else None
        #: When the newest message for it was received (``time.monotonic()``).
        self.message_at = 0.0

    def wake(self, received_at: float) -> None:
        self.message_at = received_at  # before the event: a reader that sees it, sees this
        if self.loop_event is None:
            self.thread_event.set()
            return
        assert self.loop is not None  # set together with loop_event
        with contextlib.suppress(RuntimeError):  # the loop closed; its reader is gone
            self.loop.call_soon_threadsafe(self.loop_event.set)

    def clear(self) -> None:
        self.thread_event.clear()
        if self.loop_event is not None:
            self.loop_event.clear()


class _Listener:
    """The process's one subscription to the changes channel, and who waits on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiters: dict[str, set[_Waiter]] = {}
        self.subscribed = threading.Event()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.idle_since = time.monotonic()
        #: The client the subscription was made with.
        self.client: Any = None

    def add(self, waiter: _Waiter) -> None:
        with self.lock:
            for feed in waiter.feeds:
                self.waiters.setdefault(feed, set()).add(waiter)
            self._ensure_running()

    def remove(self, waiter: _Waiter) -> None:
        with self.lock:
            for feed in waiter.feeds:
                watching = self.waiters.get(feed)
                if watching is not None:
                    watching.discard(waiter)
                    if not watching:
                        del self.waiters[feed]
            if not self.waiters:
                self.idle_since = time.monotonic()

    def waiting(self) -> int:
        """How many readers wait now (for tests and the benchmark)."""
        with self.lock:
            return len({w for watching in self.waiters.values() for w in watching})

    def _ensure_running(self) -> None:
        # Called with the lock held. A forked child has no thread: it starts its own.
        if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
            return
        self.pid = os.getpid()
        self.subscribed.clear()
        self.thread = threading.Thread(target=self._run, name="diffs-live", daemon=True)
        self.thread.start()

    def _wake(self, feed: str) -> None:
        received_at = time.monotonic()
        with self.lock:
            woken = list(self.waiters.get(feed, ()))
        for waiter in woken:
            waiter.wake(received_at)

    def _wake_all(self) -> None:
        received_at = time.monotonic()
        with self.lock:
            woken = {w for watching in self.waiters.values() for w in watching}
        for waiter in woken:
            waiter.wake(received_at)

    def _idle(self) -> bool:
        """True (and the listener is let go) once no reader has waited for a while."""
        with self.lock:
            if self.waiters or time.monotonic() - self.idle_since < IDLE_SECONDS:
                return False
            if self.thread is threading.current_thread():
                self.thread = None  # the next reader starts a new listener
            return True

    def _run(self) -> None:
        while True:
            failed = False
            try:
                self._listen()
            except Exception as error:  # any failure: readers fall back
                failed = True
                logger.debug("django-diffs stopped listening for new diffs: %r", error)
            if self.thread is not threading.current_thread():
                return  # replaced (or let go): the new listener owns "subscribed"
            self.subscribed.clear()
            self._wake_all()
            if failed:
                time.sleep(_RETRY_SECONDS)
                if self._idle():  # Redis out of reach and no one waiting: stop trying
                    return

    def _listen(self) -> None:
        """Subscribe and wake readers until the settings change or no one waits.

        The connection is pinged every ``_PING_SECONDS``: a connection that died
        without a word (a failover, a NAT timeout) would otherwise look like a quiet
        feed for as long as TCP keepalive takes, readers waiting their full wait."""
        client = self.client = get_connection()
        channel = current_layout().changes_channel
        pubsub: Any = cast(Any, client).pubsub()  # redis-py leaves it untyped
        try:
            pubsub.subscribe(channel)
            heard = pinged = time.monotonic()
            while get_connection() is client and current_layout().changes_channel == channel:
                if self._idle():
                    return
                now = time.monotonic()
                if now - heard > 3 * _PING_SECONDS:
                    msg = f"no answer from Redis on {channel!r} for {now - heard:.0f} s"
                    raise ConnectionError(msg)
                if now - pinged > _PING_SECONDS and self.subscribed.is_set():
                    pubsub.ping()
                    pinged = now
                message = pubsub.get_message(timeout=_POLL_SECONDS)
                if message is None:
                    continue
                heard = time.monotonic()
                if message["type"] == "subscribe":
                    # From here on no write is missed: wake every reader, whose last
                    # read may have come before the subscription.
                    self.subscribed.set()
                    self._wake_all()
                elif message["type"] == "message":
                    data = message["data"]
                    self._wake(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            if self.thread is threading.current_thread():
                self.subscribed.clear()
            pubsub.close()

    def forget_after_fork(self) -> None:
        """In a forked child: no thread, no readers (the parent's stay the parent's)."""
        self.lock = threading.Lock()
        self.waiters = {}
        self.subscribed = threading.Event()
        self.thread = None
        self.client = None


_listener = _Listener()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_listener.forget_after_fork)


def waiting_readers() -> int:
    """How many readers of this process wait for a diff now."""
    return _listener.waiting()


class _ThreadSlots:
    """How many threads of the process wait now, against ``max_waiting_threads``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = 0
        self.held = threading.local()  # depth of this thread's holding

    def take(self) -> bool:
        depth = getattr(self.held, "depth", 0)
        if depth:  # this thread holds a slot already (an event stream's reads)
            self.held.depth = depth + 1
            return True
        with self.lock:
            if self.taken >= get_settings().max_waiting_threads:
                return False
            self.taken += 1
        self.held.depth = 1
        return True

    def give_back(self) -> None:
        # A stream's generator may be closed by the collector, in another thread.
        depth = getattr(self.held, "depth", 1) - 1
        self.held.depth = depth
        if depth <= 0:
            self.held.depth = 0
            with self.lock:
                self.taken -= 1


_thread_slots = _ThreadSlots()
if hasattr(os, "register_at_fork"):  # a lock held at the fork stays held in the child
    os.register_at_fork(after_in_child=lambda: globals().update(_thread_slots=_ThreadSlots()))


@contextlib.contextmanager
def waiting_thread() -> Iterator[bool]:
    """A slot for this thread to wait for a diff in: True while held, False when
    ``max_waiting_threads`` threads of the process wait already. A waiting thread is a
    request a sync server cannot serve meanwhile; the slots bound how many."""
    taken = _thread_slots.take()
    try:
        yield taken
    finally:
        if taken:
            _thread_slots.give_back()


def wait_for_page(
    read: Callable[[Since], FeedPage], cursor: Since, feeds: Iterable[str], wait: float
) -> FeedPage:
    """Read a page after ``cursor``; while it is empty, wait for a write to one of
    ``feeds`` (at most ``wait`` seconds in all) and read again.

    Returns the first page with diffs, or the empty page of a read made after ``wait``
    ran out (its cursor is fresh). Without ``wait``, or when ``max_waiting_threads``
    threads of the process wait already, it reads once and returns.
    """
    if wait <= 0:
        return read(cursor)
    with waiting_thread() as may_wait:
        if not may_wait:
            return read(cursor)
        return _wait_for_page(read, cursor, feeds, wait)


def _wait_for_page(
    read: Callable[[Since], FeedPage], cursor: Since, feeds: Iterable[str], wait: float
) -> FeedPage:
    deadline = time.monotonic() + wait
    waiter = _Waiter(frozenset(feeds), None)
    _listener.add(waiter)
    try:
        while True:
            waiter.clear()
            page = read(cursor)
            left = deadline - time.monotonic()
            if page.diffs or page.has_more or left <= 0:
                return page
            cursor = page.cursor
            waiter.thread_event.wait(_pause(left))
    finally:
        _listener.remove(waiter)


async def await_page(
    read: Callable[[Since], Awaitable[FeedPage]],
    cursor: Since,
    feeds: Iterable[str],
    wait: float,
    share_as: Hashable | None = None,
) -> FeedPage:
    """:func:`wait_for_page` for async readers: waits on the event loop.

    Readers of one loop that wait on the same thing (``share_as``: what is read, and
    how, except the cursor) and hold the same cursor share their reads: a write that
    wakes a thousand streams costs one read, not a thousand (see :func:`_shared_read`).
    """
    if wait <= 0:
        return await read(cursor)
    deadline = time.monotonic() + wait
    waiter = _Waiter(frozenset(feeds), asyncio.get_running_loop())
    assert waiter.loop_event is not None  # a loop was given
    _listener.add(waiter)
    try:
        woken = False
        while True:
            started = time.monotonic()
            waiter.clear()
            # Woken by a message: any read that reached Redis after the message came
            # sees the write it announced, so a read in flight since then will do.
            # Otherwise (the first read, or the wait ran out): a read from now on.
            not_before = min(waiter.message_at, started) if woken else started
            if share_as is None:
                page = await read(cursor)
            else:
                one_read = functools.partial(read, cursor)
                page = await _shared_read((share_as, cursor), not_before, one_read)
            left = deadline - time.monotonic()
            if page.diffs or page.has_more or left <= 0:
                return page
            # The cursor stays: waiting readers that hold it share the next read.
            try:
                await asyncio.wait_for(waiter.loop_event.wait(), _pause(left))
                woken = True
            except asyncio.TimeoutError:
                woken = False
    finally:
        _listener.remove(waiter)


# Per loop: the reads in flight, by what they read, with when each started.
_flights: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Hashable, tuple[float, asyncio.Future[FeedPage]]]
] = weakref.WeakKeyDictionary()


async def _shared_read(
    key: Hashable, not_before: float, read: Callable[[], Awaitable[FeedPage]]
) -> FeedPage:
    """``read()``, or the page of the same read made on this loop a moment ago.

    A read that started at ``not_before`` or later serves as it is: a reader woken by
    a write asks for one started after it was woken, and such a read reached Redis
    after the write's script had run (the message that woke it was sent by that
    script), so it sees the write. An older read (in flight, or done less than
    ``_KEEP_SECONDS`` ago) serves only when it found diffs: those are a true answer
    (the diffs right after the cursor, and a cursor that resumes after them), just
    not the newest one. Readers that fall behind a busy feed, two hundred event
    streams say, then read it once per change, not once each.
    """
    loop = asyncio.get_running_loop()
    flights = _flights.setdefault(loop, {})
    flight = flights.get(key)
    if flight is not None:
        started, earlier = flight
        if started >= not_before:
            return await asyncio.shield(earlier)
        with contextlib.suppress(Exception):  # its reader got the error; we read again
            page = await asyncio.shield(earlier)
            if page.diffs or page.has_more:
                return page
    future: asyncio.Future[FeedPage] = asyncio.ensure_future(read())
    flights[key] = (time.monotonic(), future)

    def forget() -> None:
        if flights.get(key, (0.0, None))[1] is future:
            del flights[key]

    future.add_done_callback(lambda _: loop.call_later(_KEEP_SECONDS, forget))
    return await asyncio.shield(future)


def _pause(left: float) -> float:
    """How long a reader waits before reading again, at most."""
    return left if _listener.subscribed.is_set() else min(left, FALLBACK_SECONDS)
