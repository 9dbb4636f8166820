"""Server-sent events: a model's feed as a ``text/event-stream`` response.

The REST endpoint's ``<list>/diffs/stream/`` (``DiffsViewSetMixin.diffs_stream``)
checks authentication, permissions and throttling as the feed does, and refuses a
malformed cursor with a 400, before the response starts. It reads nothing from Redis
itself: under ASGI, Django runs that part of every request in a thread of its own, and
two hundred streams opening at once (a redeploy) would hold two hundred threads
contending for Redis connections and the GIL. :func:`event_stream_response` streams:

* one ``diff`` event per diff the user may see: ``id:`` its cursor, ``data:`` the
  entry the REST feed would show (one line of JSON);
* an event with only an ``id:`` when the cursor moves past diffs the user may not see,
  or (a heartbeat, with a ``:`` comment) when nothing happened for
  ``HEARTBEAT_SECONDS``: the browser's ``Last-Event-ID`` stays fresh and proxies see
  traffic;
* ``diffs-error`` (data ``{"code"}``) when reading fails, and the stream ends. For an
  expired cursor (``"cursor_expired"``) its ``id:`` is a cursor standing for now: the
  browser reconnects from there, and the page fetches what it shows afresh.

The stream ends after ``DIFFS_SETTINGS["max_wait"]`` seconds; the browser reconnects
after ``retry:`` milliseconds, sending ``Last-Event-ID``, and the request is
authenticated and checked again.

Under ASGI the body is an async iterator: waiting for a diff and reading Redis happen
on the event loop (``asince(wait=...)``, one subscription per process). Deciding what
the user may see needs the database, so it runs in a small pool of
``DATABASE_THREADS`` threads shared by every stream, each with its own database
connection: a thousand streams do not open a thousand connections. Under WSGI the body
is a sync iterator that holds its worker thread for as long as the stream lasts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections, connections
from django.http import StreamingHttpResponse
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.renderers import BaseRenderer
from rest_framework.utils.encoders import JSONEncoder

from diffs import live
from diffs.connection import REDIS_ERRORS
from diffs.cursors import decode_cursor
from diffs.exceptions import CursorExpired, InvalidCursor, RedisUnavailable
from diffs.feed import FeedPage
from diffs.settings import get_settings

if TYPE_CHECKING:
    from rest_framework.request import Request

    from diffs.contrib.drf import DiffsViewSetMixin

logger = logging.getLogger("diffs")

#: Seconds without a diff after which a stream sends a heartbeat.
HEARTBEAT_SECONDS = 15.0
#: Milliseconds the browser waits before reconnecting (the ``retry:`` field).
RECONNECT_MS = 2000
#: Threads that decide, for every stream of the process, which diffs a user may see.
DATABASE_THREADS = 4

_OPENING = f"retry: {RECONNECT_MS}\n\n".encode()
# What an event id may be: a cursor (no newline can end the field early).
_ID = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


class EventStreamRenderer(BaseRenderer):  # type: ignore[misc]
    """Lets DRF's content negotiation accept ``Accept: text/event-stream`` (what
    ``EventSource`` sends). The stream itself is not rendered by DRF; an error answered
    before it starts (400, 403, 410, 503) is rendered as JSON."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        return json.dumps(data, cls=JSONEncoder).encode()


def event_stream_response(
    view: DiffsViewSetMixin, request: Request, since: str | None, limit: int
) -> StreamingHttpResponse:
    """The ``text/event-stream`` response of the feed after ``since`` for ``view``'s
    user (``view`` has checked the request)."""
    stream = _Stream(view, since, limit)
    body: Iterator[bytes] | AsyncIterator[bytes]
    if isinstance(request._request, ASGIRequest):
        body = stream.events()
        _release_database_connections()
    else:
        body = stream.sync_events()
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events on as they come
    return response


class _Stream:
    """One client's stream: where it stands and how to render a page for its user."""

    def __init__(self, view: DiffsViewSetMixin, since: str | None, limit: int) -> None:
        self.view = view
        self.model = view.get_diffs_queryset().model
        self.limit = limit
        self.cursor: str | None = since
        self.ends_at = time.monotonic() + get_settings().max_wait

    async def events(self) -> AsyncIterator[bytes]:
        """The events, for an ASGI server."""
        manager = self.view._diffs_manager(self.model)
        yield _OPENING
        first = True
        # One registration for the stream's life: after a page that left nothing
        # unread, the next wait starts without reading Redis again.
        async with live.watching():
            while (left := self.ends_at - time.monotonic()) > 0:
                wait = 0.0 if first else min(HEARTBEAT_SECONDS, left)
                try:
                    page = await manager.asince(self.cursor, self.limit, wait=wait)
                except Exception as error:  # any failure ends the stream, with its reason
                    yield self._failure(error)
                    return
                first = False
                try:
                    rendered = await _render_batched(self, page)
                except Exception as error:  # the database, a hook, a revoked permission
                    yield self._failure(error)
                    return
                yield rendered

    def sync_events(self) -> Iterator[bytes]:
        """The events, for a WSGI server: the worker thread waits with the stream, in
        one of the process's ``max_waiting_threads`` slots (none free: ``busy``)."""
        with live.waiting_thread() as may_wait:
            if not may_wait:
                yield _OPENING + b'event: diffs-error\ndata: {"code": "busy"}\n\n'
                return
            yield from self._sync_events()

    def _sync_events(self) -> Iterator[bytes]:
        manager = self.view._diffs_manager(self.model)
        yield _OPENING
        first = True
        while (left := self.ends_at - time.monotonic()) > 0:
            wait = 0.0 if first else min(HEARTBEAT_SECONDS, left)
            try:
                # This thread holds its slot: since() waits in it.
                page = manager.since(self.cursor, self.limit, wait=wait)
            except Exception as error:  # any failure ends the stream, with its reason
                yield self._failure(error)
                return
            first = False
            try:
                rendered = self._render(page)
            except Exception as error:  # the database, a hook, a revoked permission
                yield self._failure(error)
                return
            yield rendered

    def _render(self, page: FeedPage) -> bytes:
        """The events of ``page``: what the user may see of it, then its cursor."""
        entries = self.view._diffs_shown_entries(page)
        memo = page_memo.get()
        parts = []
        last = None
        for entry in entries:
            data = memo.encoded.get(id(entry)) if memo is not None else None
            if data is None:
                # ASCII: a lone surrogate in the data cannot break the encoding of the page.
                data = json.dumps(entry, cls=JSONEncoder, ensure_ascii=True, allow_nan=False)
                if memo is not None and id(entry) in memo.strict:  # a shared entry
                    memo.encoded[id(entry)] = data
            cursor = entry.get("cursor")  # a diff_representation() override may drop it
            if isinstance(cursor, str) and _ID.fullmatch(cursor):
                last = cursor
                parts.append(f"id: {last}\nevent: diff\ndata: {data}\n\n")
            else:
                parts.append(f"event: diff\ndata: {data}\n\n")
        if not page.diffs:
            parts.append(": heartbeat\n")
        if page.cursor is not None:
            if page.cursor != last:  # past diffs not shown, or a quiet moment
                parts.append(f"id: {page.cursor}\n\n")
            self.cursor = self._read_position(page)
        return "".join(parts).encode()

    def _read_position(self, page: FeedPage) -> str | None:
        """Where the next read starts: the browser's id is the page's cursor, but the
        stream reads on from the last diff it was given while that is recent. Streams
        that were given the same diff then hold the same position and share their reads
        and their rendering (a watermark, the cursor of a quiet moment, differs for each
        stream); after half of ``max_element_age`` the position moves to the page's
        cursor, so that it never expires."""
        if page.has_more or page.cursor is None:
            return page.cursor
        if page.diffs:
            return page.diffs[-1].cursor or page.cursor
        if self.cursor is None:
            return page.cursor
        age_ms = decode_cursor(page.cursor) - decode_cursor(self.cursor)
        if age_ms > get_settings().max_element_age * 500:
            return page.cursor
        return self.cursor

    def _failure(self, error: Exception) -> bytes:
        """The ``diffs-error`` event that ends a stream whose read failed."""
        body: dict[str, Any]
        if isinstance(error, CursorExpired):
            # The id moves the browser's Last-Event-ID to now: it does not reconnect
            # with the expired cursor again.
            data = json.dumps({"code": "cursor_expired", "cursor": error.restart_cursor})
            return f"id: {error.restart_cursor}\nevent: diffs-error\ndata: {data}\n\n".encode()
        if isinstance(error, InvalidCursor):
            body = {"code": "invalid_cursor"}
        elif isinstance(error, (PermissionDenied, NotAuthenticated)):
            body = {"code": "permission_denied"}
        elif isinstance(error, (RedisUnavailable, *REDIS_ERRORS)):
            body = {"code": "redis_unavailable"}
        else:
            logger.exception("A django-diffs event stream of %s failed.", self.model._meta.label)
            body = {"code": "error"}
        return f"event: diffs-error\ndata: {json.dumps(body)}\n\n".encode()


def _release_database_connections() -> None:
    """Close this thread's database connections (those not in a transaction).

    Under ASGI the thread that ran the view is kept, with its connections, until the
    response ends: for a stream, as long as the client listens. A thousand streams
    would hold a thousand connections while the database threads do the work.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


class PageMemo:
    """What the streams rendering one page together have worked out already.

    Only what provably does not depend on which stream asks is shared: a visibility
    query's rows by its database, SQL and parameters (``drf._present``); an entry by
    its diff and everything the default ``diff_representation()`` reads (the
    serializer's columns, the context keys: ``drf.DiffsViewSetMixin.diffs_entries``);
    an entry's JSON by the entry. A viewset that overrides how entries are made gets
    its own, every time.
    """

    def __init__(self, page: FeedPage) -> None:
        #: The page's diffs by id, held: an entry is shared only for one of them (a
        #: copy a hook made could be freed, and its id given to another user's copy).
        self.diffs = {id(diff): diff for diff in page.diffs}
        self.queries: dict[Hashable, frozenset[Any]] = {}
        self.entries: dict[Hashable, dict[str, Any]] = {}
        #: ids of the entries in ``entries`` (alive while the memo is: ids stay theirs).
        self.held: set[int] = set()
        #: ids of entries (kept alive in ``entries``) found to be strict JSON.
        self.strict: set[int] = set()
        #: JSON of entries, by the entry's id.
        self.encoded: dict[int, str] = {}


#: While a batch of streams renders one page (in a database thread): its memo.
page_memo: ContextVar[PageMemo | None] = ContextVar("page_memo", default=None)


class _Batch:
    """The streams of one loop that render one page, run by one job of the threads."""

    def __init__(self, page: FeedPage) -> None:
        self.page = page
        self.jobs: list[tuple[_Stream, asyncio.Future[bytes]]] = []


# Per loop: the batch still open for each page (by identity: woken streams that share
# a read hold the very same page object).
_open_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Batch]] = (
    weakref.WeakKeyDictionary()
)


async def _render_batched(stream: _Stream, page: FeedPage) -> bytes:
    """``stream._render(page)`` in the streams' database threads, together with every
    other stream of this loop rendering the same page in the same moment: a write that
    wakes two hundred streams costs one hop to a thread, and each distinct visibility
    query once, instead of two hundred of each."""
    loop = asyncio.get_running_loop()
    batches = _open_batches.setdefault(loop, {})
    batch = batches.get(id(page))
    if batch is None:
        batch = batches[id(page)] = _Batch(page)
        # After the streams woken with this one have run up to here and joined.
        loop.call_soon(_start_batch, loop, batches, id(page), batch)
    future: asyncio.Future[bytes] = loop.create_future()
    batch.jobs.append((stream, future))
    return await future


def _start_batch(
    loop: asyncio.AbstractEventLoop, batches: dict[int, _Batch], key: int, batch: _Batch
) -> None:
    if batches.get(key) is batch:
        del batches[key]
    loop.run_in_executor(_database_executor(), _run_batch, loop, batch)


def _run_batch(loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
    """Render ``batch`` (in a database thread), as Django runs a request: old or broken
    connections are closed before and after (``CONN_MAX_AGE`` applies). Every stream
    of the batch is settled, whatever fails: one left unsettled would wait forever."""
    outcomes: list[tuple[asyncio.Future[bytes], bytes | None, Exception | None]] = []
    try:
        close_old_connections()
        token = page_memo.set(PageMemo(batch.page))
        try:
            for stream, future in batch.jobs:
                try:
                    outcomes.append((future, stream._render(batch.page), None))
                except Exception as error:  # that stream's failure, not the others'
                    outcomes.append((future, None, error))
        finally:
            page_memo.reset(token)
    except Exception as error:  # the database could not be made ready
        settled = {id(future) for future, _, _ in outcomes}
        outcomes += [(f, None, error) for _, f in batch.jobs if id(f) not in settled]
    finally:
        # One wake-up of the loop for the whole batch. One per stream would hand the
        # GIL back and forth with the loop's thread two hundred times, each hand-over
        # waiting up to the interpreter's switch interval (5 ms): that, not rendering,
        # was most of the latency with many clients.
        loop.call_soon_threadsafe(_settle_all, outcomes)
    try:
        close_old_connections()
    except Exception:  # the streams have their events; the next batch tries again
        logger.warning("django-diffs could not close a stream thread's connections.")


def _settle_all(
    outcomes: list[tuple[asyncio.Future[bytes], bytes | None, Exception | None]],
) -> None:
    for future, result, error in outcomes:
        if future.done():  # its stream went away (the client disconnected)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or b"")


def _forget_executor_after_fork() -> None:
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()  # the parent's threads are not here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor_after_fork)


def _database_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="diffs-events")
        return _executor
