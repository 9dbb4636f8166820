"""``Model.diffs``: the manager on the class, the object's diff list on an instance."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, overload

import redis
from django.core.exceptions import ValidationError
from django.db import models

from diffs import live, reads
from diffs.async_connection import get_async_connection
from diffs.clock import datetime_to_ms, fixed_score_problem, now_ms
from diffs.connection import cached_script, get_connection
from diffs.cursors import Since, decode_cursor, encode_cursor
from diffs.delivery import OutgoingDiff, write_before_read, write_one
from diffs.diff import Diff, new_diff_id, raw_size
from diffs.feed import (
    MAX_LIMIT,
    FeedPage,
    check_limit,
    model_page_before,
    model_page_steps,
    narrow_page,
    object_page_steps,
    position_of,
    read_object_steps,
)
from diffs.keys import ObjectKeys, feed_member, model_label, normalize_pk, pk_value
from diffs.lanes import LANES_LUA
from diffs.layout import current_layout
from diffs.settings import get_settings
from diffs.sortedset import DiffSortedSet, decode_entries
from diffs.steps import Steps, arun, run

_M = TypeVar("_M", bound=models.Model)
_T = TypeVar("_T")

#: A read of one page after a cursor: its steps (``diffs.steps``) and its name in errors.
_Reader = Callable[[Since], tuple[Steps[FeedPage], str]]

# Hides what an object has so far from reads of that object: its birth moves to just
# above its newest diff, in either lane (and the clock). KEYS: the set, its birth key,
# its index. ARGV[1]: how long (ms) the birth key lives (max_element_age: older diffs
# are hidden anyway).
_RESTART_SCRIPT = (
    LANES_LUA
    + """
local now = redis.call('TIME')
local birth = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local newest = tonumber(redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
local last = last_record(KEYS[3])
if last and (not newest or last > newest) then newest = last end
if newest and newest >= birth then birth = newest + 0.001 end
redis.call('SET', KEYS[2], fmt(birth), 'PX', ARGV[1])
return 1
"""
)


#: Diffs read per round trip by :meth:`DiffModelManager.object_newest`.
_NEWEST_STEP = 10


class DiffModelManager(Generic[_M]):
    """Reads and writes the diffs of one registered model.

    It holds no connection and no prefix of its own: both are looked up on every call,
    so ``override_settings(DIFFS_SETTINGS=...)`` takes effect at once.
    """

    def __init__(self, model: type[_M]) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"<DiffModelManager for {self.model._meta.label}>"

    @property
    def db(self) -> redis.Redis:
        """The Redis client in use (kept from 0.1.16, where it was an attribute)."""
        return get_connection()

    @property
    def prefix(self) -> str:
        """The key prefix in use."""
        return get_settings().prefix

    def get_key(self, pk: Any, model_cls: type[models.Model] | None = None) -> str:
        """Return the Redis key of the object ``pk`` (of ``model_cls``, default this model)."""
        return current_layout().object_key(model_cls or self.model, pk)

    #: 0.1.16's name for :meth:`get_key` (the key now carries the app label).
    _generate_key = get_key

    def get_sortedset(self, pk: Any, model_cls: type[models.Model] | None = None) -> DiffSortedSet:
        """Return the sorted set holding the diffs of the object ``pk`` (the raw view)."""
        model = model_cls or self.model
        return DiffSortedSet(
            self.get_key(pk, model),
            get_connection(),
            model_label(model),
            pk_value(model, pk),
            current_layout().birth_key(model, pk),
        )

    def get_by_object_id(self, pk: Any, since: Since = None) -> list[Diff]:
        """Return the diffs of the object ``pk``, oldest first (any pk type works).

        Only diffs within ``max_element_age`` are returned, and none of an earlier row
        that had the same pk. With ``since`` (a diff's ``cursor``, or Unix
        milliseconds), only the diffs after it. Redis is read in pages of at most 1,000
        diffs and ``page_bytes``.

        Raises:
            CursorExpired: ``since`` is older than ``max_element_age`` (or than what
                Redis still holds completely, see the README's Guarantees).
            InvalidCursor: ``since`` is malformed.
            RedisUnavailable: Redis cannot be reached, or failed a moment ago.
        """
        steps, what = self._object_diffs(pk, since)
        return reads.read(lambda: run(get_connection(), steps), what)

    async def aget_by_object_id(self, pk: Any, since: Since = None) -> list[Diff]:
        """:meth:`get_by_object_id` for async code: the same diffs and errors, read with
        ``redis.asyncio`` on the running event loop."""
        steps, what = self._object_diffs(pk, since)
        return await reads.aread(lambda: _arun(steps), what)

    def _object_diffs(self, pk: Any, since: Since) -> tuple[Steps[list[Diff]], str]:
        label, pk_python = model_label(self.model), pk_value(self.model, pk)
        return (
            self._object_diffs_steps(self._object_keys(pk), since, label, pk_python),
            f"the diffs of {label} pk={pk_python!r}",
        )

    @staticmethod
    def _object_diffs_steps(
        keys: ObjectKeys, since: Since, label: str, pk_python: Any
    ) -> Steps[list[Diff]]:
        conf = get_settings()
        diffs: list[Diff] = []
        cursor = since
        while True:
            page = yield from read_object_steps(
                keys,
                cursor,
                limit=MAX_LIMIT,
                max_bytes=conf.page_bytes,
                max_element_age=conf.max_element_age,
                # Only the caller's cursor is checked; later pages go on from ours.
                check=cursor is since,
            )
            diffs += decode_entries(keys.key, page.entries, label, pk_python)
            if not page.has_more:
                return diffs
            cursor = page.cursor()

    def object_since(
        self, pk: Any, cursor: Since = None, limit: int = 100, *, wait: float | None = None
    ) -> FeedPage:
        """Return a page of the object ``pk``'s diffs after ``cursor``, oldest first.

        Unlike :meth:`get_by_object_id`, the page carries a cursor even when it is empty,
        which keeps a polling client's cursor fresh while nothing changes. A page holds
        at most ``limit`` diffs and about ``page_bytes`` (always at least one diff).
        With ``wait`` (seconds), an empty page is not returned at once: the call returns
        as soon as a diff after ``cursor`` exists, or after ``wait`` with an empty page
        and a fresh cursor (see :meth:`since`).

        Raises:
            CursorExpired: ``cursor`` is older than ``max_element_age``.
            InvalidCursor: ``cursor`` is malformed.
            RedisUnavailable: Redis cannot be reached, or failed a moment ago.
            ValueError: ``limit`` is not between 1 and 1000, or ``wait`` is negative.
        """
        read, feeds = self._object_reader(pk, limit)
        return self._sync_page(read, cursor, feeds, wait)

    async def aobject_since(
        self, pk: Any, cursor: Since = None, limit: int = 100, *, wait: float | None = None
    ) -> FeedPage:
        """:meth:`object_since` for async code (``redis.asyncio``, no thread hop)."""
        read, feeds = self._object_reader(pk, limit)
        read_as = ("object", model_label(self.model), str(pk_value(self.model, pk)), limit)
        return await self._async_page(read, cursor, feeds, wait, read_as)

    def _object_reader(self, pk: Any, limit: int) -> tuple[_Reader, list[str]]:
        check_limit(limit)
        label, pk_python = model_label(self.model), pk_value(self.model, pk)
        keys = self._object_keys(pk)

        def read(cursor: Since) -> tuple[Steps[FeedPage], str]:
            conf = get_settings()
            steps = object_page_steps(
                keys,
                self.model,
                pk_python,
                cursor,
                limit=limit,
                max_bytes=conf.page_bytes,
                max_element_age=conf.max_element_age,
            )
            return steps, f"the diffs of {label} pk={pk_python!r}"

        return read, [keys.feed]

    def since(
        self, cursor: Since = None, limit: int = 100, *, wait: float | None = None
    ) -> FeedPage:
        """Return a page of the diffs of every object of this model, oldest first.

        Pass the page's ``cursor`` back to get the next page; ``has_more`` says whether
        one is waiting. A page costs two Redis round trips, however many objects the
        model has, and holds at most ``limit`` diffs and about ``page_bytes``. Diffs a
        child sent to an object of this model with ``get_diff_parent()`` are included;
        their ``model`` and ``pk`` name the child. Diffs of an earlier row with the same
        pk (deleted, then the pk used again) are included with ``superseded=True``.

        With ``wait`` (seconds), a long poll: when nothing follows ``cursor`` yet, the
        call waits for the next diff of the model and returns as soon as one is
        written, or after ``wait`` with an empty page and a fresh cursor. Waiting costs
        no Redis traffic: one subscription per process wakes every waiting reader
        (``diffs.live``).

        Raises:
            CursorExpired: ``cursor`` is older than ``max_element_age``.
            InvalidCursor: ``cursor`` is malformed.
            RedisUnavailable: Redis cannot be reached, or failed a moment ago.
            ValueError: ``limit`` is not between 1 and 1000, or ``wait`` is negative.
        """
        read, feeds = self._feed_reader(limit)
        return self._sync_page(read, cursor, feeds, wait)

    async def asince(
        self, cursor: Since = None, limit: int = 100, *, wait: float | None = None
    ) -> FeedPage:
        """:meth:`since` for async code: the same pages and errors, read with
        ``redis.asyncio`` on the running event loop; ``wait`` waits on the loop."""
        read, feeds = self._feed_reader(limit)
        read_as = ("feed", model_label(self.model), limit)
        # Any later cursor of the feed can be served from a read after an earlier one.
        resume = live.Resume(position_of, narrow_page)
        return await self._async_page(read, cursor, feeds, wait, read_as, resume)

    def _feed_reader(self, limit: int) -> tuple[_Reader, list[str]]:
        check_limit(limit)
        model = self.model
        keys = current_layout().model_keys(model)

        def read(cursor: Since) -> tuple[Steps[FeedPage], str]:
            conf = get_settings()
            steps = model_page_steps(
                model,
                keys,
                cursor,
                limit=limit,
                max_bytes=conf.page_bytes,
                max_element_age=conf.max_element_age,
            )
            return steps, f"the feed of {model_label(model)}"

        return read, [keys.feed]

    @staticmethod
    def _sync_page(read: _Reader, cursor: Since, feeds: list[str], wait: float | None) -> FeedPage:
        def once(since: Since) -> FeedPage:
            steps, what = read(since)
            return reads.read(lambda: run(get_connection(), steps), what)

        if wait is None:
            return once(cursor)
        return live.wait_for_page(once, cursor, feeds, live.check_wait(wait))

    @staticmethod
    async def _async_page(
        read: _Reader,
        cursor: Since,
        feeds: list[str],
        wait: float | None,
        read_as: Hashable,
        resume: live.Resume | None = None,
    ) -> FeedPage:
        async def once(since: Since) -> FeedPage:
            steps, what = read(since)
            return await reads.aread(lambda: _arun(steps), what)

        if wait is None:
            return await once(cursor)
        # Streams that wait on one feed with one cursor share their reads (diffs.live).
        conf = get_settings()
        share_as = (read_as, conf.page_bytes, conf.max_element_age, conf.prefix)
        return await live.await_page(once, cursor, feeds, live.check_wait(wait), share_as, resume)

    def newest(self, before: str | None = None, limit: int = 100) -> FeedPage:
        """Return a page of the model's diffs newest first, for browsing (the admin).

        ``before`` is the ``cursor`` of the previous page (None: start at the newest);
        the page holds diffs older than it, within ``max_element_age``. Clients that
        keep up with changes use :meth:`since`, which never misses a diff written
        meanwhile.

        Raises:
            InvalidCursor: ``before`` is malformed.
            RedisUnavailable: Redis cannot be reached, or failed a moment ago.
            ValueError: ``limit`` is not between 1 and 1000.
        """
        check_limit(limit)
        conf = get_settings()
        return reads.read(
            functools.partial(
                model_page_before,
                get_connection(),
                self.model,
                current_layout().model_keys(self.model),
                before,
                limit=limit,
                max_bytes=conf.page_bytes,
                max_element_age=conf.max_element_age,
            ),
            f"the feed of {model_label(self.model)}",
        )

    def object_newest(self, pk: Any, before: str | None = None, limit: int = 100) -> FeedPage:
        """Return a page of one object's diffs newest first (see :meth:`newest`): at most
        ``limit`` diffs and about ``page_bytes`` (at least one)."""
        check_limit(limit)
        conf = get_settings()
        upper = "+inf" if before is None else f"({decode_cursor(before)!r}"
        floor = now_ms() - conf.max_element_age * 1000
        diffs = self.get_sortedset(pk)
        page: list[Diff] = []
        size = 0
        # A few at a time, so that a page of large diffs stops at the byte budget; each
        # step starts below the last one's oldest score (scores are never shared), so a
        # step costs the same however deep the page is.
        while True:
            step = diffs.zrevrangebyscore(upper, floor, start=0, num=_NEWEST_STEP)
            if step and step[-1].cursor is not None:  # a stored diff always has one
                upper = f"({decode_cursor(step[-1].cursor)!r}"
            for diff in step:
                cost = raw_size(diff)
                if len(page) == limit or (page and size + cost > conf.page_bytes):
                    return FeedPage(page, page[-1].cursor, True)
                page.append(diff)
                size += cost
            if len(step) < _NEWEST_STEP or step[-1].cursor is None:
                return FeedPage(page, None, False)

    def restart_history(self, pk: Any) -> None:
        """Hide every diff recorded so far for the object ``pk`` from reads of it.

        Use it when a row becomes visible to people who were not to see its past (a
        draft published, a record handed to another owner): object reads and the REST
        endpoint then start from now, as for a new row. The model feed keeps the
        earlier diffs, marked ``superseded``. They age out as usual.

        Raises:
            RedisUnavailable: Redis cannot be reached, or failed a moment ago.
        """
        keys = self._object_keys(pk)
        client = get_connection()
        script = cached_script(client, _RESTART_SCRIPT)
        ttl_ms = max(1, round(get_settings().max_element_age * 1000))
        reads.read(
            lambda: script(keys=[keys.key, keys.birth, keys.index], args=[ttl_ms]),
            f"the history of {model_label(self.model)} pk={pk!r}",
        )

    def _object_keys(self, pk: Any) -> ObjectKeys:
        return current_layout().object_keys(self.model, pk)

    def create(
        self,
        data: Any = None,
        created: bool | None = None,
        pk: Any = None,
        model_cls: type[models.Model] | None = None,
        timestamp: float | dt.datetime | None = None,
        deleted: bool = False,
    ) -> Diff:
        """Store a diff for the object ``pk`` right away and return it.

        This is the low-level write (no hooks, no transaction, Redis errors propagate);
        saves of registered models write for you. The diff goes where a save's would
        (the model's log and the object's index, see ``storage``); its member is always
        written in the full format, whatever ``member_format`` says, since ``data`` need
        not be the object's own serialized fields. ``timestamp`` (epoch ms or a datetime)
        fixes the score; by default Redis assigns the next one in write order, which
        cursors rely on.
        """
        if pk is None:
            msg = f"{self.model.__name__}.diffs.create() needs the pk of the object it describes."
            raise ValueError(msg)
        model = model_cls or self.model
        _check_pk(model, pk)
        diff = Diff(data=data, created=created, deleted=deleted, id=new_diff_id())
        write_before_read()  # with write_behind: after the diffs this process saved
        fixed = _fixed_score(model, pk, timestamp)
        object_pk = normalize_pk(model, pk)
        outgoing = OutgoingDiff(
            key=self.get_key(pk, model),
            member=diff.to_member(),
            feed_key=current_layout().feed_key(model),
            feed_member=feed_member(diff.id or "", object_pk),
            score=fixed,
            label=model_label(model),
            object_pk=object_pk,
        )
        score = write_one(get_connection(), outgoing)
        return Diff.stored(
            diff.data,
            created=created,
            deleted=deleted,
            id=diff.id,
            # A fixed time the script could not use as the score is kept in "t".
            timestamp=score if fixed is None else fixed,
            pk=pk_value(model, pk),
            model=model_label(model),
            cursor=encode_cursor(score),
            holder_pk=pk_value(model, pk),
        )


async def _arun(steps: Steps[_T]) -> _T:
    """Run ``steps`` with the running loop's ``redis.asyncio`` client."""
    return await arun(await get_async_connection(), steps)


def _check_pk(model: type[models.Model], pk: Any) -> None:
    field = model._meta.pk
    try:
        if field is not None:
            field.to_python(pk)
    except (ValidationError, TypeError, ValueError) as error:
        msg = f"{pk!r} cannot be a primary key of {model.__name__}: {error}"
        raise ValueError(msg) from error


def _fixed_score(
    model: type[models.Model], pk: Any, timestamp: float | dt.datetime | None
) -> float | None:
    """``create(timestamp=...)`` as epoch ms; raises ValueError for a score no read could
    ever return (naming the model, pk and value)."""
    if timestamp is None:
        return None
    try:
        score = (
            datetime_to_ms(timestamp) if isinstance(timestamp, dt.datetime) else float(timestamp)
        )
    except (OverflowError, ValueError):
        score = math.nan
    problem = fixed_score_problem(score, get_settings().max_element_age)
    if problem is not None:
        msg = (
            f"{model.__name__}.diffs.create(pk={pk!r}, timestamp={timestamp!r}): refused, "
            f"{problem}. Pass a time within the retention window, or no timestamp to use "
            "the Redis clock."
        )
        raise ValueError(msg)
    return score


class DiffModelDescriptor(Generic[_M]):
    """``Model.diffs`` gives the manager; ``instance.diffs`` gives that object's diffs."""

    def __init__(self, manager: DiffModelManager[_M]) -> None:
        self.manager = manager

    @overload
    def __get__(self, instance: None, owner: type[_M]) -> DiffModelManager[_M]: ...

    @overload
    def __get__(self, instance: _M, owner: type[_M]) -> list[Diff]: ...

    def __get__(self, instance: _M | None, owner: type[_M]) -> DiffModelManager[_M] | list[Diff]:
        if instance is None:
            return self.manager
        if instance.pk is None:
            return []  # an unsaved object has no diffs yet
        return self.manager.get_by_object_id(instance.pk)
