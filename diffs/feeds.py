"""One cursor across several models: ``diffs.since(cursor, models=[...])``.

Each model's feed keeps its own promise (scores strictly increasing in write order,
see :mod:`diffs.feed`); a score of one feed says nothing about another's (a burst on
one model may push its scores ahead of the clock). So the cursor of several models is
not one score but one position per model, and a page is built from one page of each
model, merged by score, cut at ``limit`` diffs and about ``page_bytes``. Each model's
position then moves exactly past the diffs of it that the page holds: a diff of any
model is never skipped and never given twice, whatever the other models do.

The cursor is opaque text: a checksum of the models' labels, then each model's
position, in label order (``"3f1a9c2e~1795342808609.766~1795342808611.002"``). A
cursor given for other models is refused (``InvalidCursor``): the set of models is
part of what the cursor means.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from django.db import models

from diffs import live, reads
from diffs.async_connection import get_async_connection
from diffs.connection import get_connection
from diffs.cursors import Since, decode_cursor, excerpt
from diffs.diff import Diff, raw_size
from diffs.exceptions import CursorExpired, InvalidCursor
from diffs.feed import FeedPage, check_limit, model_page_steps
from diffs.keys import model_label
from diffs.layout import current_layout
from diffs.registry import is_registered
from diffs.settings import get_settings
from diffs.steps import Steps, arun, run

#: Most models one cursor may span (each costs a read per page).
MAX_MODELS = 20

_SEPARATOR = "~"


@dataclass(frozen=True)
class ModelsPage(FeedPage):
    """A page of several models' diffs: :class:`FeedPage`, and the feed each came from."""

    #: For each diff of ``diffs``, the model whose feed holds it (for a child's diff
    #: sent with ``get_diff_parent()``, the parent's model, not ``diff.model``).
    feeds: list[type[models.Model]] = field(default_factory=list)


@dataclass(frozen=True)
class _Models:
    """The models of a multi-model read, in label order, and their cursor checksum."""

    models: tuple[type[models.Model], ...]
    labels: tuple[str, ...]
    checksum: str

    @classmethod
    def of(cls, given: object) -> _Models:
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not given:
            msg = "models must be a non-empty list of models registered with django-diffs."
            raise ValueError(msg)
        by_label: dict[str, type[models.Model]] = {}
        for model in given:
            if not (isinstance(model, type) and issubclass(model, models.Model)):
                msg = f"models must hold model classes, not {model!r}."
                raise ValueError(msg)
            if not is_registered(model):
                msg = f"{model_label(model)} is not registered: decorate it with @diffs.register."
                raise ValueError(msg)
            by_label[model_label(model)] = model
        if len(by_label) > MAX_MODELS:
            msg = f"One cursor spans at most {MAX_MODELS} models, not {len(by_label)}."
            raise ValueError(msg)
        labels = tuple(sorted(by_label))
        checksum = f"{zlib.crc32(' '.join(labels).encode()):08x}"
        return cls(tuple(by_label[label] for label in labels), labels, checksum)

    def positions(self, cursor: Since) -> list[Since]:
        """Each model's position in ``cursor`` (None everywhere for no cursor)."""
        if cursor is None:
            return [None] * len(self.models)
        if not isinstance(cursor, str):
            msg = (
                f"{excerpt(cursor)} is not a cursor of several models: pass back a page's cursor."
            )
            raise InvalidCursor(msg)
        parts = cursor.split(_SEPARATOR)
        if len(parts) != len(self.models) + 1 or len(cursor) > 32 * (len(self.models) + 1):
            msg = f"{excerpt(cursor)} is not a cursor of these {len(self.models)} models."
            raise InvalidCursor(msg)
        if parts[0] != self.checksum:
            msg = (
                f"{excerpt(cursor)} was given for other models than {', '.join(self.labels)}: "
                "pass the same models as for the page that gave it."
            )
            raise InvalidCursor(msg)
        positions: list[Since] = []
        for part in parts[1:]:
            if part:
                decode_cursor(part)  # refuses anything that is not one
            positions.append(part or None)  # "": from the oldest diff kept
        return positions

    def cursor(self, positions: Sequence[str]) -> str:
        """The cursor of ``positions`` (one per model, in label order; "" for none)."""
        return _SEPARATOR.join((self.checksum, *positions))


def since(
    cursor: Since = None,
    *,
    models: Sequence[type[models.Model]],
    limit: int = 100,
    wait: float | None = None,
) -> ModelsPage:
    """Return a page of the diffs of several models, in one order, after ``cursor``.

    The page holds at most ``limit`` diffs and about ``page_bytes``, oldest first
    (by score; each model's own order is exact). Pass its ``cursor`` back, with the
    same ``models``, for the next page. ``wait`` long-polls as ``Model.diffs.since``
    does. Each page reads every model's feed once.

    Raises:
        CursorExpired: one model's position is older than ``max_element_age`` (or its
            horizon); ``restart_cursor`` stands for now, for every model.
        InvalidCursor: ``cursor`` is malformed, or was given for other models.
        RedisUnavailable: Redis cannot be reached, or failed a moment ago.
        ValueError: ``models`` or ``limit`` or ``wait`` is not valid.
    """
    chosen, feeds = _prepare(models, limit)

    def once(after: Since) -> ModelsPage:
        steps = _page_steps(chosen, after, limit)
        return reads.read(lambda: run(get_connection(), steps), _what(chosen))

    if wait is None:
        return once(cursor)
    return cast(ModelsPage, live.wait_for_page(once, cursor, feeds, live.check_wait(wait)))


async def asince(
    cursor: Since = None,
    *,
    models: Sequence[type[models.Model]],
    limit: int = 100,
    wait: float | None = None,
) -> ModelsPage:
    """:func:`since` for async code (``redis.asyncio`` on the running loop)."""
    chosen, feeds = _prepare(models, limit)

    async def once(after: Since) -> ModelsPage:
        async def call() -> ModelsPage:
            return await arun(await get_async_connection(), _page_steps(chosen, after, limit))

        return await reads.aread(call, _what(chosen))

    if wait is None:
        return await once(cursor)
    page = await live.await_page(once, cursor, feeds, live.check_wait(wait))
    return cast(ModelsPage, page)


def _prepare(given: Sequence[type[models.Model]], limit: int) -> tuple[_Models, list[str]]:
    check_limit(limit)
    chosen = _Models.of(given)
    layout = current_layout()
    return chosen, [layout.feed_key(model) for model in chosen.models]


def _what(chosen: _Models) -> str:
    return f"the feeds of {', '.join(chosen.labels)}"


def _page_steps(chosen: _Models, cursor: Since, limit: int) -> Steps[ModelsPage]:
    positions = chosen.positions(cursor)
    conf = get_settings()
    layout = current_layout()
    pages: list[FeedPage] = []
    for model, position in zip(chosen.models, positions, strict=True):
        try:
            page = yield from model_page_steps(
                model,
                layout.model_keys(model),
                position,
                limit=limit,
                max_bytes=conf.page_bytes,
                max_element_age=conf.max_element_age,
            )
        except CursorExpired as error:
            restart = error.restart_cursor
            restarted = chosen.cursor([restart] * len(chosen.models)) if restart else None
            raise CursorExpired(str(error), restarted) from error
        pages.append(page)
    return _merge(chosen, positions, pages, limit, conf.page_bytes)


def _position_text(position: Since) -> str:
    return "" if position is None else str(position)


def _merge(
    chosen: _Models,
    positions: list[Since],
    pages: list[FeedPage],
    limit: int,
    max_bytes: int,
) -> ModelsPage:
    """One page of the models' pages: the oldest diffs first, each model's position
    moved exactly past those of it taken."""
    candidates: list[tuple[float, int, int, Diff]] = [
        (decode_cursor(diff.cursor or "0"), index, order, diff)
        for index, page in enumerate(pages)
        for order, diff in enumerate(page.diffs)
    ]
    candidates.sort(key=lambda entry: entry[:3])
    # A model with more diffs than its page holds may have one scored below another
    # model's next diff: nothing scored after the end of such a page is taken yet, or
    # the page would not be in score order.
    cut = [decode_cursor(page.cursor) for page in pages if page.has_more and page.cursor]
    if cut:
        bound = min(cut)
        candidates = [entry for entry in candidates if entry[0] <= bound]
    taken: list[Diff] = []
    feeds: list[type[models.Model]] = []
    taken_of = [0] * len(pages)
    size = 0
    for _, index, _, diff in candidates:
        cost = raw_size(diff)
        if len(taken) == limit or (taken and size + cost > max_bytes):
            break
        taken.append(diff)
        feeds.append(chosen.models[index])
        taken_of[index] += 1
        size += cost
    moved: list[str] = []
    has_more = False
    for index, page in enumerate(pages):
        count = taken_of[index]
        if count == len(page.diffs):
            moved.append(page.cursor or _position_text(positions[index]))
            has_more = has_more or page.has_more
        else:
            last = page.diffs[count - 1].cursor if count else positions[index]
            moved.append("" if last is None else str(last))
            has_more = True
    return ModelsPage(taken, chosen.cursor(moved), has_more, feeds)
