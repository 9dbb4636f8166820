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
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
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
    """One waiting reader: the feeds it watches and how to wake it (a thread's event,
    or, for a reader on an event loop, the future it awaits on that loop)."""

    def __init__(self, feeds: frozenset[str], loop: asyncio.AbstractEventLoop | None) -> None:
        self.feeds = feeds
        self.loop = loop
        self.thread_event = threading.Event() if loop is None else None
        #: What the loop's reader awaits now (None: it is not waiting).
        self.pending: asyncio.Future[None] | None = None
        #: Where its reader's cursor stands (``Resume.position``), when known.
        self.position: float | None = None
        #: When the newest message for it was received (``time.monotonic()``).
        self.message_at = 0.0

    async def sleep(self, timeout: float) -> None:
        """On its loop: until woken, or ``timeout`` seconds. One future and one timer:
        ``asyncio.wait_for()`` would add a task per wait, and a stream waits after
        every page."""
        loop = asyncio.get_running_loop()
        pending = self.pending = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), _resolve, pending)
        try:
            await pending
        finally:
            timer.cancel()
            self.pending = None


def _resolve(pending: asyncio.Future[None]) -> None:
    if not pending.done():
        pending.set_result(None)


def _wake(waiters: Iterable[_Waiter], received_at: float) -> None:
    """Wake ``waiters``: a thread's directly, a loop's readers with one call into
    their loop for all of them. A call per reader would hand the GIL between this
    thread and the loop's once per reader, each hand-over waiting up to the
    interpreter's switch interval (5 ms): two hundred streams woke over a second."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
    for waiter in waiters:
        waiter.message_at = received_at  # before the wake: a reader that wakes, sees it
        if waiter.thread_event is not None:
            waiter.thread_event.set()
        elif waiter.loop is not None:
            by_loop.setdefault(waiter.loop, []).append(waiter)
    for loop, woken in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed; its readers are gone
            loop.call_soon_threadsafe(_wake_on_loop, woken)


def _wake_on_loop(waiters: list[_Waiter]) -> None:
    # Earliest cursor first: its reader starts the read that the readers after it,
    # holding later cursors, can share (``Resume``), whatever order they waited in.
    waiters.sort(key=_earliest_first)
    for waiter in waiters:
        if waiter.pending is not None:
            _resolve(waiter.pending)


def _earliest_first(waiter: _Waiter) -> float:
    return math.inf if waiter.position is None else waiter.position


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
        _wake(woken, received_at)

    def _wake_all(self) -> None:
        received_at = time.monotonic()
        with self.lock:
            woken = {w for watching in self.waiters.values() for w in watching}
        _wake(woken, received_at)

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
            assert waiter.thread_event is not None  # a thread's waiter
            waiter.thread_event.clear()
            page = read(cursor)
            left = deadline - time.monotonic()
            if page.diffs or page.has_more or left <= 0:
                return page
            cursor = page.cursor
            waiter.thread_event.wait(_pause(left))
    finally:
        _listener.remove(waiter)


@dataclass(frozen=True)
class Resume:
    """How a page read after one cursor serves a reader holding a later cursor of the
    same feed (:func:`await_page`): ``position`` orders cursors (None: it cannot
    tell), ``narrow`` gives the page a read after the later cursor would have given at
    the same moment, or None when the page cannot tell."""

    position: Callable[[Since], float | None]
    narrow: Callable[[FeedPage, Since], FeedPage | None]


class _Watch:
    """A waiter kept for one reader's feeds, and what its reads covered.

    ``covered`` maps cursors to the start (``time.monotonic()``) of a read that left
    nothing unread after them: a reader holding such a cursor, with no message
    received since that read started, knows a read now would find nothing, and waits
    without reading. Only a watch kept across calls (:func:`watching`) remembers."""

    def __init__(self, feeds: frozenset[str], loop: asyncio.AbstractEventLoop) -> None:
        self.waiter = _Waiter(feeds, loop)
        self.registered_at = time.monotonic()
        _listener.add(self.waiter)
        self.covered: dict[Since, float] = {}

    def remember(self, cursor: Since, page: FeedPage, read_at: float) -> None:
        self.covered = {}
        if page.has_more or page.cursor is None:
            return
        # The read saw every diff after ``cursor`` up to the page's cursor: none is
        # left after the page's cursor, after its last diff, or (an empty page) after
        # the cursor it was read from.
        self.covered[page.cursor] = read_at
        last = getattr(page.diffs[-1], "cursor", None) if page.diffs else cursor
        if last is not None:
            self.covered[last] = read_at

    def close(self) -> None:
        _listener.remove(self.waiter)


class _KeptWatches:
    """The watches a reader keeps across calls (:func:`watching`), by the feeds they
    watch and what is read of them (an object's page and its model's feed wait on the
    same feed, but a read of one covers nothing of the other)."""

    def __init__(self) -> None:
        self.by_read: dict[tuple[frozenset[str], Hashable], _Watch] = {}
        self.open = True

    def close(self) -> None:
        self.open = False
        for watch in self.by_read.values():
            watch.close()
        self.by_read.clear()


_kept_watches: ContextVar[_KeptWatches | None] = ContextVar("diffs_kept_watches", default=None)


def _open_kept_watches() -> _KeptWatches | None:
    kept = _kept_watches.get()
    return kept if kept is not None and kept.open else None


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[None]:
    """Keep the waits of :func:`await_page` in this block registered between calls.

    A reader that reads a feed again and again (an event stream) then hears every
    write from its first wait on, and after a page that left nothing unread it waits
    for the next write without reading Redis first: two hundred streams woken by one
    write read it once, then wait, instead of reading two hundred times more.
    """
    kept = _KeptWatches()
    token = _kept_watches.set(kept)
    try:
        yield
    finally:
        kept.close()
        # An event stream's generator may be closed from another task (the loop
        # closing abandoned generators), whose context cannot reset the token: the
        # watches are closed above all the same, and a closed set is never used.
        with contextlib.suppress(ValueError):
            _kept_watches.reset(token)


@contextlib.contextmanager
def _watch_for(feeds: frozenset[str], read_as: Hashable) -> Iterator[_Watch]:
    loop = asyncio.get_running_loop()
    kept = _open_kept_watches()
    if kept is not None:
        watch = kept.by_read.get((feeds, read_as))
        if watch is None or watch.waiter.loop is not loop:
            if watch is not None:
                watch.close()
            watch = kept.by_read[feeds, read_as] = _Watch(feeds, loop)
        yield watch
        return
    watch = _Watch(feeds, loop)
    try:
        yield watch
    finally:
        watch.close()


async def await_page(
    read: Callable[[Since], Awaitable[FeedPage]],
    cursor: Since,
    feeds: Iterable[str],
    wait: float,
    share_as: Hashable | None = None,
    resume: Resume | None = None,
) -> FeedPage:
    """:func:`wait_for_page` for async readers: waits on the event loop.

    Readers of one loop that wait on the same thing (``share_as``: what is read, and
    how, except the cursor) share their reads: a write that wakes a thousand streams
    costs one read, not a thousand (see :func:`_shared_read`). ``resume`` lets a
    reader use a read made after an earlier cursor than its own.

    A read is fresh enough when it started after the newest message heard for these
    feeds (it sees the write announced) and after the wait began (it sees every
    write before). Within :func:`watching`, a reader whose cursor a read left nothing
    after, with no message heard since that read started, waits without reading.
    """
    streaming = _open_kept_watches() is not None
    if wait <= 0:
        if share_as is None or not streaming:
            return await read(cursor)
        # Streams opening together (a redeploy: every browser reconnects) share
        # their first reads too: two hundred at once would queue for connections.
        # Any read of the last moment will do: the stream's next call reads again
        # before it waits (its watch knows nothing of what came before).
        page, _ = await _shared_read(share_as, cursor, -math.inf, read, None, True)
        return page
    deadline = time.monotonic() + wait
    with _watch_for(frozenset(feeds), share_as) as watch:
        waiter = watch.waiter
        waiter.position = None if resume is None else resume.position(cursor)
        read_at = watch.covered.get(cursor)
        ending = False
        while True:
            quiet = (
                read_at is not None
                and waiter.message_at < read_at
                and _listener.subscribed.is_set()
                and deadline > time.monotonic()
            )
            if not quiet:
                # Fresh enough: it sees every write before the wait began and the
                # newest one announced; at the end, a read from now (a fresh cursor).
                not_before = max(watch.registered_at, waiter.message_at)
                if ending:
                    not_before = time.monotonic()
                if share_as is None:
                    read_at = time.monotonic()
                    page = await read(cursor)
                else:
                    page, read_at = await _shared_read(
                        share_as, cursor, not_before, read, resume, streaming
                    )
                if read_at < watch.registered_at:
                    watch.covered = {}  # an older read: writes before the wait may be unseen
                else:
                    watch.remember(cursor, page, read_at)
                left = deadline - time.monotonic()
                if page.diffs or page.has_more or left <= 0:
                    return page
                # The cursor stays: waiting readers that hold it share the next read.
            assert read_at is not None
            if waiter.message_at >= read_at:
                continue  # heard during the read: read again
            # A message heard from here on wakes it (message_at is set first).
            await waiter.sleep(_pause(deadline - time.monotonic()))
            if deadline <= time.monotonic():
                read_at, ending = None, True  # one last read, for a fresh cursor


class _Flight:
    """A read in flight (or just done) on one loop: after which cursor, since when,
    and the pages made of it for readers holding later cursors."""

    def __init__(
        self,
        cursor: Since,
        started: float,
        future: asyncio.Future[FeedPage],
        position: float | None,
    ) -> None:
        self.cursor = cursor
        self.position = position
        self.started = started
        self.future = future
        self.narrowed: dict[Since, FeedPage | None] = {}


# Per loop: the reads in flight, by what they read, then by cursor.
_flights: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Hashable, dict[Since, _Flight]]
] = weakref.WeakKeyDictionary()


async def _shared_read(
    share_as: Hashable,
    cursor: Since,
    not_before: float,
    read: Callable[[Since], Awaitable[FeedPage]],
    resume: Resume | None = None,
    older_with_diffs: bool = False,
) -> tuple[FeedPage, float]:
    """``read(cursor)``, or the page of a read made on this loop a moment ago; with
    when the read used started.

    A read after the same cursor that started after ``not_before`` serves as it is:
    a reader woken by a write asks for one started after it was woken, and such a
    read reached Redis after the write's script had run (the message that woke it was
    sent by that script), so it sees the write. With ``older_with_diffs`` (event
    streams), an older read (in flight, or done less than ``_KEEP_SECONDS`` ago)
    serves when it found diffs: those are a true answer (the diffs right after the
    cursor, and a cursor that resumes after them), just not the newest one. Streams
    that fall behind a busy feed then read it once per change, not once each. Other
    readers do not take such a page: it may miss a write they just made.

    With ``resume``, a fresh enough read after an earlier cursor serves too, narrowed
    to what follows this reader's cursor: streams that hold different cursors (each
    its own moment of a quiet feed) share the read that the next write wakes them for.
    """
    loop = asyncio.get_running_loop()
    if loop not in _flights:
        # A flight's future holds its loop: the weak keys alone never let go of one.
        for closed in [known for known in _flights if known.is_closed()]:
            del _flights[closed]
    flights = _flights.setdefault(loop, {}).setdefault(share_as, {})
    flight = flights.get(cursor)
    if flight is not None:
        if flight.started > not_before:
            return await asyncio.shield(flight.future), flight.started
        if older_with_diffs:
            with contextlib.suppress(Exception):  # its reader got the error; we read again
                page = await asyncio.shield(flight.future)
                if page.diffs or page.has_more:
                    return page, flight.started
    if resume is not None:
        served = await _narrowed(flights, cursor, not_before, resume)
        if served is not None:
            return served
    started = time.monotonic()
    future: asyncio.Future[FeedPage] = asyncio.ensure_future(read(cursor))
    position = None if resume is None else resume.position(cursor)
    flight = flights[cursor] = _Flight(cursor, started, future, position)

    def forget() -> None:
        if flights.get(cursor) is flight:
            del flights[cursor]

    future.add_done_callback(lambda _: loop.call_later(_KEEP_SECONDS, forget))
    return await asyncio.shield(future), started


async def _narrowed(
    flights: dict[Since, _Flight], cursor: Since, not_before: float, resume: Resume
) -> tuple[FeedPage, float] | None:
    """The page of the closest fresh enough read after an earlier cursor, narrowed
    to what follows ``cursor``; None when there is none or it cannot tell."""
    position = resume.position(cursor)
    if position is None:
        return None
    best: _Flight | None = None
    best_position = -math.inf
    for flight in flights.values():
        if flight.started <= not_before:
            continue
        earlier = flight.position
        if earlier is not None and best_position < earlier <= position:
            best, best_position = flight, earlier
    if best is None:
        return None
    try:
        page = await asyncio.shield(best.future)
    except Exception:  # e.g. its cursor had expired: ours is read on its own
        return None
    if cursor not in best.narrowed:
        best.narrowed[cursor] = resume.narrow(page, cursor)
    narrowed = best.narrowed[cursor]
    return None if narrowed is None else (narrowed, best.started)


def _pause(left: float) -> float:
    """How long a reader waits before reading again, at most."""
    return left if _listener.subscribed.is_set() else min(left, FALLBACK_SECONDS)
