"""Reading diffs after a cursor: one object's, or a whole model's (the feed).

Every page costs at most two round trips whatever the number of objects, and is
bounded in bytes as well as in count: reading stops once the diffs taken reach
``page_bytes`` (a page always holds at least one diff; ``has_more`` says the rest is
waiting, and the cursor resumes exactly there).

* One object: one script reads the server clock, the model's horizon, the object's
  birth and the page of its sorted set.
* The feed: one script reads the clock, the horizon and a page of the feed (pointers:
  diff id and pk), then one script fetches the listed diffs from their objects' sets,
  stopping at the byte budget, with each object's birth.

The cursor of a page is the score of its last diff or, when the page reaches the end,
a watermark just below the server time at which it was read: any diff written later
gets a higher score (see ``diffs.delivery.store``), so a client that keeps polling keeps a fresh
cursor even while nothing changes. A cursor older than ``max_element_age``, or than
the model's horizon (``diffs.horizon``), raises ``CursorExpired``.

Reads of one object start at its birth (``diffs.keys.KeyLayout.birth_key``): diffs of an earlier
row with the same pk are never returned for it. The feed returns them, marked
``superseded``: they are the model's history, but not this row's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.db import models

from diffs.cursors import Since, check_fresh, decode_cursor, encode_cursor, start_of
from diffs.diff import Diff
from diffs.exceptions import InvalidCursor
from diffs.horizon import READ_HORIZON_LUA
from diffs.keys import DIFF_ID_LENGTH, ModelKeys, ObjectKeys, parse_feed_member, pk_value
from diffs.sortedset import decode_entries, pairs
from diffs.steps import ScriptCall, Steps, run

logger = logging.getLogger("diffs")

#: Most diffs one page may hold.
MAX_LIMIT = 1000

# One microsecond below the server's time: a diff written in that same microsecond
# still sorts after the watermark.
_WATERMARK_MARGIN_MS = 0.001

# Range reads stop below +inf ("(+inf"): no score django-diffs gives is infinite, and a
# cursor cannot be (see diffs.cursors), so an entry someone wrote there is left out.
# Shared by both read scripts: the clock, and the lower bound of a range read. ARGV[1]
# is the cursor as a range bound ("(<score>", exclusive) or "" for "from the oldest
# diff kept" (now - max_element_age, inclusive); ARGV[2] is max_element_age in seconds.
_READ_PRELUDE = (
    READ_HORIZON_LUA
    + """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local function fmt(value) return string.format('%.17g', value) end
local function start_of(bound)
  if string.sub(bound, 1, 1) == '(' then return tonumber(string.sub(bound, 2)), true end
  return tonumber(bound), false
end
-- The lower bound of the range read: after the cursor, or (no cursor) from the oldest
-- diff both kept and known complete: the window's start, or the horizon if later.
local function lower_bound(from)
  if ARGV[1] ~= '' then return ARGV[1] end
  local floor = now_ms - tonumber(ARGV[2]) * 1000
  if from > floor then floor = from end
  return fmt(floor)
end
"""
)

# One object's page. KEYS: object set, model feed, model horizon, object birth.
# ARGV[3]: most entries to return (limit), ARGV[4]: byte budget.
# Returns {seconds, microseconds, horizon from, birth or '', has_more, member, score, ...}.
_OBJECT_PAGE_SCRIPT = (
    _READ_PRELUDE
    + """
local from = read_horizon(KEYS[3], KEYS[2], now_ms, ARGV[2])
local low = lower_bound(from)
-- The birth: "<score>" or "<score>|<id>" (see diffs.delivery.store).
local birth = redis.call('GET', KEYS[4])
birth = birth and tonumber(string.match(birth, '^[^|]+'))
if birth then
  local start, exclusive = start_of(low)
  if birth > start then low = fmt(birth) end
end
-- A diff that reached Redis after the birth but whose change committed before it (its
-- commit time "t": late after an outage, recovered from the outbox) is not this row's.
local function before_birth(member)
  if not birth then return false end
  local late = string.match(member, '^{"t":([^,]+),')
  return late ~= nil and tonumber(late) ~= nil and tonumber(late) < birth
end
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local result = {now[1], now[2], fmt(from), birth and fmt(birth) or '', 0}
local taken, bytes, offset, batch = 0, 0, 0, 4
while true do
  local run = redis.call(
    'ZRANGEBYSCORE', KEYS[1], low, '(+inf', 'WITHSCORES', 'LIMIT', offset, batch)
  if #run == 0 then return result end
  for j = 1, #run, 2 do
    local size = #run[j]
    if taken >= limit or (taken > 0 and bytes + size > budget) then
      result[5] = 1
      return result
    end
    if not before_birth(run[j]) then
      result[#result + 1] = run[j]
      result[#result + 1] = run[j + 1]
      taken, bytes = taken + 1, bytes + size
    end
  end
  offset = offset + #run / 2
  if batch < 64 then batch = batch * 2 end
end
"""
)

# A feed page's pointers. KEYS: feed, horizon. ARGV[3]: most entries (limit + 1).
# Returns {seconds, microseconds, horizon from, feed member, score, ...}.
_FEED_PAGE_SCRIPT = (
    _READ_PRELUDE
    + """
local from = read_horizon(KEYS[2], KEYS[1], now_ms, ARGV[2])
local low = lower_bound(from)
local entries = redis.call(
  'ZRANGEBYSCORE', KEYS[1], low, '(+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local result = {now[1], now[2], fmt(from)}
for _, value in ipairs(entries) do result[#result + 1] = value end
return result
"""
)

# A feed page's pointers, newest first, below a bound. KEYS: feed, horizon. ARGV[1]: the
# upper bound ("(<score>", exclusive, or "(+inf"); ARGV[3]: most entries (limit + 1).
# Returns {seconds, microseconds, horizon from, feed member, score, ...}.
_FEED_PAGE_BEFORE_SCRIPT = (
    _READ_PRELUDE
    + """
local from = read_horizon(KEYS[2], KEYS[1], now_ms, ARGV[2])
local floor = now_ms - tonumber(ARGV[2]) * 1000
if from > floor then floor = from end
local entries = redis.call(
  'ZREVRANGEBYSCORE', KEYS[1], ARGV[1], fmt(floor), 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local result = {now[1], now[2], fmt(from)}
for _, value in ipairs(entries) do result[#result + 1] = value end
return result
"""
)

# The diffs a feed page points at. KEYS: the distinct object sets, then their birth
# keys in the same order. ARGV[1]: byte budget; then per pointer: index of its object
# set in KEYS (1-based), score, diff id.
# Returns {pointers taken, birth or '' per object set..., member or '' per pointer taken}.
_FETCH_SCRIPT = """
local sets = #KEYS / 2
local budget = tonumber(ARGV[1])
local result = {0}
for i = 1, sets do result[#result + 1] = redis.call('GET', KEYS[sets + i]) or '' end
local bytes, taken = 0, 0
for p = 2, #ARGV, 3 do
  local key, score, id = KEYS[tonumber(ARGV[p])], ARGV[p + 1], ARGV[p + 2]
  local found = ''
  local needle = '"id":"' .. id .. '"'
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, score, score)) do
    if string.find(member, needle, 1, true) then found = member break end
  end
  if taken > 0 and bytes + #found > budget then break end
  result[#result + 1] = found
  taken, bytes = taken + 1, bytes + #found
end
result[1] = taken
return result
"""


@dataclass(frozen=True)
class FeedPage:
    """A page of diffs, oldest first, with the cursor to pass back for the next one."""

    diffs: list[Diff]
    cursor: str | None
    has_more: bool


@dataclass(frozen=True)
class _Window:
    """What a read learned besides its entries: the clock, the horizon, the start."""

    #: The Redis server's time, in epoch ms.
    server_ms: float
    #: From when the model's diffs are complete (``diffs.horizon``).
    horizon_ms: float
    #: The score the read started from (the cursor, or the oldest score kept).
    start: float

    @property
    def watermark(self) -> float:
        return self.server_ms - _WATERMARK_MARGIN_MS


@dataclass(frozen=True)
class Page:
    """Entries ``(member, score)`` read after a cursor, and where the read stands."""

    entries: list[tuple[Any, float]]
    has_more: bool
    window: _Window

    def cursor(self) -> str:
        """The cursor after this page: its last entry, or the watermark at the end."""
        last = self.entries[-1][1] if self.entries else self.window.start
        if self.has_more:
            return encode_cursor(last)
        return encode_cursor(max(last, self.window.watermark, self.window.start))


def position_of(since: Since) -> float | None:
    """The score a feed cursor stands for, or None (no cursor, or not a valid one)."""
    if since is None:
        return None
    try:
        return decode_cursor(since)
    except InvalidCursor:
        return None


def narrow_page(page: FeedPage, since: Since) -> FeedPage | None:
    """The page a read of the same feed after ``since`` would have given, made from
    ``page``, read at the same moment after an earlier cursor; None when ``page``
    cannot tell (it ends before ``since``, or keeps nothing after it but has more).

    The page itself when it holds nothing at or before ``since``: readers that share
    it render it once (``diffs.contrib.events``).
    """
    score = position_of(since)
    end = position_of(page.cursor)
    if score is None or end is None or end < score:
        return None
    kept = []
    for diff in page.diffs:
        at = position_of(diff.cursor)
        if at is None:
            return None
        if at > score:
            kept.append(diff)
    if page.has_more and not kept:
        return None  # what follows its last diff (or its cursor) is unread
    if len(kept) == len(page.diffs):
        return page
    return FeedPage(kept, page.cursor, page.has_more)


def _bound(since: Since) -> tuple[str, float | None]:
    """The script's range bound for ``since`` and the cursor's score (None: no cursor)."""
    score, _ = start_of(since, 0.0)
    if since is None:
        return "", None
    return f"({score!r}", score


def _window(
    raw: Sequence[Any], since: Since, score: float | None, age: float, *, check: bool = True
) -> _Window:
    server_ms = int(raw[0]) * 1000 + int(raw[1]) / 1000
    horizon = float(raw[2])
    start = max(server_ms - age * 1000, horizon) if score is None else score
    if check:
        check_fresh(since, start, server_ms, age, horizon)
    return _Window(server_ms, horizon, start)


def check_limit(limit: object) -> None:
    """Refuse a page size outside 1..MAX_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}."
        raise ValueError(msg)


def read_object(
    client: redis.Redis,
    keys: ObjectKeys,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
    check: bool = True,
) -> Page:
    """Read up to ``limit`` entries (and about ``max_bytes``) of one object after ``since``.

    ``check=False`` skips the cursor's freshness check: for a reader continuing from a
    page it read itself a moment ago (the window may have moved past it meanwhile).

    Raises:
        CursorExpired: ``since`` is older than the window or the model's horizon.
        InvalidCursor: ``since`` is malformed or in the future.
    """
    steps = read_object_steps(
        keys, since, limit=limit, max_bytes=max_bytes, max_element_age=max_element_age, check=check
    )
    return run(client, steps)


def read_object_steps(
    keys: ObjectKeys,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
    check: bool = True,
) -> Steps[Page]:
    """:func:`read_object` as steps (:mod:`diffs.steps`), for a sync or an async client."""
    bound, score = _bound(since)
    raw = yield ScriptCall(
        _OBJECT_PAGE_SCRIPT,
        [keys.key, keys.feed, keys.horizon, keys.birth],
        [bound, repr(float(max_element_age)), limit, max_bytes],
    )
    window = _window(raw, since, score, max_element_age, check=check)
    flat = raw[5:]
    entries = pairs(flat)
    return Page(entries, bool(int(raw[4])), window)


def object_page(
    client: redis.Redis,
    keys: ObjectKeys,
    model: type[models.Model],
    pk: Any,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> FeedPage:
    """One object's diffs after ``since``: at most ``limit`` and about ``max_bytes``."""
    steps = object_page_steps(
        keys, model, pk, since, limit=limit, max_bytes=max_bytes, max_element_age=max_element_age
    )
    return run(client, steps)


def object_page_steps(
    keys: ObjectKeys,
    model: type[models.Model],
    pk: Any,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> Steps[FeedPage]:
    """:func:`object_page` as steps (:mod:`diffs.steps`)."""
    check_limit(limit)
    page = yield from read_object_steps(
        keys, since, limit=limit, max_bytes=max_bytes, max_element_age=max_element_age
    )
    diffs = decode_entries(keys.key, page.entries, model._meta.label_lower, pk, eager=True)
    return FeedPage(diffs, page.cursor(), page.has_more)


def model_page(
    client: redis.Redis,
    model: type[models.Model],
    keys: ModelKeys,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> FeedPage:
    """A model's diffs (its feed) after ``since``: at most ``limit``, about ``max_bytes``."""
    steps = model_page_steps(
        model, keys, since, limit=limit, max_bytes=max_bytes, max_element_age=max_element_age
    )
    return run(client, steps)


def model_page_steps(
    model: type[models.Model],
    keys: ModelKeys,
    since: Since,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> Steps[FeedPage]:
    """:func:`model_page` as steps (:mod:`diffs.steps`)."""
    check_limit(limit)
    bound, score = _bound(since)
    raw = yield ScriptCall(
        _FEED_PAGE_SCRIPT,
        [keys.feed, keys.horizon],
        [bound, repr(float(max_element_age)), limit + 1],
    )
    window = _window(raw, since, score, max_element_age)
    flat = raw[3:]
    listed = pairs(flat)
    has_more = len(listed) > limit
    listed = listed[:limit]
    pointers = _pointers(keys.feed, listed)
    diffs, taken = yield from _fetch(model, keys, pointers, max_bytes)
    if taken < len(pointers):
        # The byte budget ended the page early: it resumes right after the last diff taken.
        page = Page([(None, pointers[taken - 1][2])], True, window)
    else:
        page = Page(listed[-1:], has_more, window)
    return FeedPage(diffs, page.cursor(), page.has_more)


def model_page_before(
    client: redis.Redis,
    model: type[models.Model],
    keys: ModelKeys,
    before: str | None,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> FeedPage:
    """A model's diffs newest first, older than the cursor ``before`` (None: the newest),
    within ``max_element_age`` and the horizon: at most ``limit``, about ``max_bytes``.
    The page's cursor is passed back as ``before`` for the next, older page (None when
    there is none). For browsing (the admin); clients that sync use :func:`model_page`.

    Raises:
        InvalidCursor: ``before`` is malformed.
    """
    steps = model_page_before_steps(
        model, keys, before, limit=limit, max_bytes=max_bytes, max_element_age=max_element_age
    )
    return run(client, steps)


def model_page_before_steps(
    model: type[models.Model],
    keys: ModelKeys,
    before: str | None,
    *,
    limit: int,
    max_bytes: int,
    max_element_age: float,
) -> Steps[FeedPage]:
    """:func:`model_page_before` as steps (:mod:`diffs.steps`)."""
    check_limit(limit)
    bound = "(+inf" if before is None else f"({decode_cursor(before)!r}"
    raw = yield ScriptCall(
        _FEED_PAGE_BEFORE_SCRIPT,
        [keys.feed, keys.horizon],
        [bound, repr(float(max_element_age)), limit + 1],
    )
    listed = pairs(raw[3:])
    pointers = _pointers(keys.feed, listed[:limit])
    diffs, taken = yield from _fetch(model, keys, pointers, max_bytes)
    more = len(listed) > limit or taken < len(pointers)
    cursor = encode_cursor(pointers[taken - 1][2]) if more and taken else None
    return FeedPage(diffs, cursor, more)


def _fetch(
    model: Any,
    keys: ModelKeys,
    pointers: list[tuple[str, str, float]],
    max_bytes: int,
) -> Steps[tuple[list[Diff], int]]:
    """The diffs ``pointers`` name, up to about ``max_bytes``; and how many were taken."""
    if not pointers:
        return [], 0
    label = model._meta.label_lower
    # One script key per object (its set, and its birth key after all the sets), by pk.
    sets: dict[str, int] = {}
    args: list[Any] = [max_bytes]
    for diff_id, pk_text, score in pointers:
        index = sets.setdefault(pk_text, len(sets) + 1)
        args += (index, repr(score), diff_id)
    script_keys = [keys.key_base + pk_text for pk_text in sets]
    script_keys += [keys.birth_base + pk_text for pk_text in sets]
    raw = yield ScriptCall(_FETCH_SCRIPT, script_keys, args)
    taken = int(raw[0])
    births = {pk_text: _score_or_none(raw[index]) for pk_text, index in sets.items()}
    members = raw[1 + len(sets) :]
    diffs: list[Diff] = []
    for (_, pk_text, score), member in zip(pointers[:taken], members, strict=True):
        if not member:
            continue  # pruned (or its key deleted) since the feed was read
        key = keys.key_base + pk_text
        found = decode_entries(key, [(member, score)], label, pk_value(model, pk_text), eager=True)
        birth = births[pk_text]
        for diff in found:
            if birth is not None and score < birth:
                diff.__dict__["superseded"] = True
            diffs.append(diff)
    return diffs, taken


def _score_or_none(value: Any) -> float | None:
    """A birth key's score (``"<score>"`` or ``"<score>|<id>"``), or None."""
    if value in (b"", "", None):
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return float(text.partition("|")[0])


def _pointers(feed: str, entries: list[Any]) -> list[tuple[str, str, float]]:
    """``(diff id, pk text, score)`` of each feed entry, skipping those not ours."""
    pointers = []
    for member, score in entries:
        try:
            diff_id, pk_text = parse_feed_member(member)
        except UnicodeDecodeError:
            diff_id, pk_text = "", ""
        if len(diff_id) < DIFF_ID_LENGTH or not pk_text or not _is_hex(diff_id):
            logger.warning(
                "Skipped an entry of %s that django-diffs did not write: %.80r", feed, member
            )
            continue
        pointers.append((diff_id, pk_text, score))
    return pointers


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdef" for char in text)
