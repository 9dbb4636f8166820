"""Reading diffs after a cursor: one object's, or a whole model's (the feed).

Every page costs at most two round trips whatever the number of objects, and is
bounded in bytes as well as in count: reading stops once the diffs taken reach
``page_bytes`` (a page always holds at least one diff; ``has_more`` says the rest is
waiting, and the cursor resumes exactly there).

Both lanes (``diffs.lanes``) are read and merged by score: the log (bodies in a
stream, an index per object) and the sorted sets of earlier versions.

* One object: one script reads the server clock, the model's horizon, the object's
  birth, and the page: its index's records with their bodies from the log, and its
  sorted set.
* The feed: one script reads the clock, the horizon and a page of the log (bodies with
  their pk) and of the feed (pointers: diff id and pk), then one script fetches the
  pointers' diffs from their objects' sets, stopping at the byte budget, with each
  object's birth.

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
from diffs.keys import DIFF_ID_LENGTH, ModelKeys, ObjectKeys, pk_value
from diffs.lanes import LANES_LUA
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
# Shared by the read scripts: the lanes' Lua (diffs.lanes), the clock, and the lower
# bound of a range read. ARGV[1] is the cursor as a range bound ("(<score>", exclusive)
# or "" for "from the oldest diff kept" (now - max_element_age, inclusive); ARGV[2] is
# max_element_age in seconds.
_READ_PRELUDE = (
    LANES_LUA
    + READ_HORIZON_LUA
    + """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
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

# One object's page, both lanes merged by score. KEYS: object set, model feed, model
# horizon, object birth, object index, model log. ARGV[3]: most entries to return
# (limit), ARGV[4]: byte budget, ARGV[5]: the object's pk text.
# Returns {seconds, microseconds, horizon from, birth or '', has_more, member, score, ...}.
_OBJECT_PAGE_SCRIPT = (
    _READ_PRELUDE
    + """
local set, feed, hkey, bkey, ix, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local from = read_horizon(hkey, feed, log, now_ms, ARGV[2])
local low = lower_bound(from)
-- The birth: "<score>" or "<score>|<id>" (see diffs.delivery.store).
local birth = redis.call('GET', bkey)
birth = birth and tonumber(string.match(birth, '^[^|]+'))
if birth then
  local start = bound_of(low)
  if birth > start then low = fmt(birth) end
end
-- A diff that reached Redis after the birth but whose change committed before it (its
-- commit time "t": late after an outage, recovered from the outbox) is not this row's.
local function before_birth(member)
  if not birth then return false end
  local late = string.match(member, '^{"t":([^,]+),')
  return late ~= nil and tonumber(late) ~= nil and tonumber(late) < birth
end
local low_value, low_exclusive = bound_of(low)
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local result = {now[1], now[2], fmt(from), birth and fmt(birth) or '', 0}
local taken, bytes, size = 0, 0, 5
-- Adds a diff to the page; false once the page is full (has_more is then set).
local function take(member, score)
  if taken >= limit or (taken > 0 and bytes + #member > budget) then
    result[5] = 1
    return false
  end
  if not before_birth(member) then
    result[size + 1], result[size + 2] = member, fmt(score)
    size, taken, bytes = size + 2, taken + 1, bytes + #member
  end
  return true
end
-- The set lane, read in growing batches (4, 8, ... 64 entries).
local legacy, legacy_at, legacy_offset, legacy_done, batch = {}, 1, 0, false, 4
local function legacy_head()
  if legacy_at > #legacy and not legacy_done then
    legacy = redis.call(
      'ZRANGEBYSCORE', set, low, '(+inf', 'WITHSCORES', 'LIMIT', legacy_offset, batch)
    legacy_at, legacy_offset = 1, legacy_offset + #legacy / 2
    if #legacy < 2 * batch then legacy_done = true end
    if batch < 64 then batch = batch * 2 end
  end
  if legacy_at > #legacy then return nil end
  return tonumber(legacy[legacy_at + 1])
end
-- The log lane: the object's index from its first record after the bound, read in
-- blocks of 256 records (one GETRANGE each), their bodies by runs (diffs.lanes).
local count = record_count(ix)
local rec = first_after(ix, low_value, low_exclusive)
local score_at, body, in_block, at = nil, nil, 0, 1
local function log_head()
  if rec >= count then return nil end
  if at > in_block then
    local block = redis.call('GETRANGE', ix, 16 * rec, 16 * (rec + 256) - 1)
    score_at, body, in_block = block_reader(log, block, ARGV[5])
    at = 1
  end
  return score_at(at)
end
local a, b = legacy_head(), log_head()
-- Both lanes merged by score (one of them is usually empty: a lane runs dry at once).
while a or b do
  local member, score
  if b and (not a or b < a) then
    score, member = b, body(at)
    rec, at = rec + 1, at + 1
    b = log_head()
  else
    member, score = legacy[legacy_at], a
    legacy_at = legacy_at + 2
    a = legacy_head()
  end
  if member and not take(member, score) then return result end
end
return result
"""
)

# Lua shared by the feed page scripts: merges the log's entries (with their bodies) and
# the feed's pointers, in the order given by `before` (true: newest first), up to ARGV[3]
# entries and the byte budget ARGV[4] of the bodies met (a pointer's body is counted by
# the fetch, later). Appends, per entry: score, pk text, member ('' for a pointer), the
# pointer's id ('' for a log entry); result[4] becomes 1 when the budget cut the page.
_MERGE_FEED_LUA = """
local function merge(result, stream, legacy, before)
  local want, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
  local s, l, taken, bytes = 1, 1, 0, 0
  while taken < want do
    local a = legacy[l] and tonumber(legacy[l + 1])
    local b = stream[s] and sid_score(stream[s][1])
    if not a and not b then break end
    local take_log = b and (not a or (before and b > a) or (not before and b < a))
    if take_log then
      local pk, member = entry_fields(stream[s])
      if taken > 0 and bytes + #member > budget then result[4] = 1 break end
      bytes = bytes + #member
      for _, v in ipairs({fmt(b), pk, member, ''}) do result[#result + 1] = v end
      s = s + 1
    else
      local entry = legacy[l]
      for _, v in ipairs({fmt(a), string.sub(entry, 17), '', string.sub(entry, 1, 16)}) do
        result[#result + 1] = v
      end
      l = l + 2
    end
    taken = taken + 1
  end
  return result
end
"""

# A feed page: the log's entries and the feed's pointers after the bound, merged. KEYS:
# feed, horizon, log. ARGV[3]: most entries (limit + 1), ARGV[4]: byte budget.
# Returns {seconds, microseconds, horizon from, cut (0/1), then 4 values per entry}.
_FEED_PAGE_SCRIPT = (
    _READ_PRELUDE
    + _MERGE_FEED_LUA
    + """
local feed, hkey, log = KEYS[1], KEYS[2], KEYS[3]
local from = read_horizon(hkey, feed, log, now_ms, ARGV[2])
local low = lower_bound(from)
local start = stream_low(bound_of(low))
local stream = {}
if start then stream = redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[3]) end
local legacy = redis.call(
  'ZRANGEBYSCORE', feed, low, '(+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[3])
return merge({now[1], now[2], fmt(from), 0}, stream, legacy, false)
"""
)

# A feed page newest first, below a bound. KEYS: feed, horizon, log. ARGV[1]: the upper
# bound ("(<score>", exclusive, or "(+inf"); ARGV[3]: most entries (limit + 1), ARGV[4]:
# byte budget. Returns as _FEED_PAGE_SCRIPT.
_FEED_PAGE_BEFORE_SCRIPT = (
    _READ_PRELUDE
    + _MERGE_FEED_LUA
    + """
local feed, hkey, log = KEYS[1], KEYS[2], KEYS[3]
local from = read_horizon(hkey, feed, log, now_ms, ARGV[2])
local floor = now_ms - tonumber(ARGV[2]) * 1000
if from > floor then floor = from end
local high = stream_high(bound_of(ARGV[1]))
local stream = {}
local low_id = stream_low(floor, false)
if high and low_id then
  stream = redis.call('XREVRANGE', log, high, low_id, 'COUNT', ARGV[3])
end
local legacy = redis.call(
  'ZREVRANGEBYSCORE', feed, ARGV[1], fmt(floor), 'WITHSCORES', 'LIMIT', 0, ARGV[3])
return merge({now[1], now[2], fmt(from), 0}, stream, legacy, true)
"""
)

# The diffs a feed page lists, up to the byte budget: the bodies of the feed's pointers
# (the log's came with the page), and each object's birth. KEYS: the distinct object
# sets, then their birth keys in the same order. ARGV[1]: byte budget; then per entry:
# index of its object set in KEYS (1-based), score, the pointer's diff id ('' for a log
# entry), the log entry's body size ('' for a pointer).
# Returns {entries taken, birth or '' per object set..., member or '' per entry taken}
# ('' for a log entry, and for a pointer whose diff was pruned since).
_FETCH_SCRIPT = """
local sets = #KEYS / 2
local budget = tonumber(ARGV[1])
local result = {0}
for i = 1, sets do result[#result + 1] = redis.call('GET', KEYS[sets + i]) or '' end
local bytes, taken = 0, 0
for p = 2, #ARGV, 4 do
  local key, score, id, size = KEYS[tonumber(ARGV[p])], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  local found, cost = '', tonumber(size) or 0
  if id ~= '' then
    local needle = '"id":"' .. id .. '"'
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, score, score)) do
      if string.find(member, needle, 1, true) then found = member break end
    end
    cost = #found
  end
  if taken > 0 and bytes + cost > budget then break end
  result[#result + 1] = found
  taken, bytes = taken + 1, bytes + cost
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
        [keys.key, keys.feed, keys.horizon, keys.birth, keys.index, keys.log],
        [bound, repr(float(max_element_age)), limit, max_bytes, keys.pk_text],
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
        [keys.feed, keys.horizon, keys.log],
        [bound, repr(float(max_element_age)), limit + 1, max_bytes],
    )
    window = _window(raw, since, score, max_element_age)
    flat = raw[4:]
    has_more = len(flat) > 4 * limit or _was_cut(raw)
    flat = flat[: 4 * limit]
    listed = _listed(keys.feed, flat)
    diffs, taken = yield from _fetch(model, keys, listed, max_bytes)
    if taken < len(listed):
        # The byte budget ended the page early: it resumes right after the last diff taken.
        page = Page([(None, listed[taken - 1].score)], True, window)
    else:
        # After the last entry read, skipped ones included (not ours: never returned).
        page = Page([(None, float(flat[-4]))] if flat else [], has_more, window)
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
        [keys.feed, keys.horizon, keys.log],
        [bound, repr(float(max_element_age)), limit + 1, max_bytes],
    )
    flat = raw[4:]
    more = len(flat) > 4 * limit or _was_cut(raw)
    flat = flat[: 4 * limit]
    listed = _listed(keys.feed, flat)
    diffs, taken = yield from _fetch(model, keys, listed, max_bytes)
    if taken < len(listed):
        return FeedPage(diffs, encode_cursor(listed[taken - 1].score), True)
    cursor = encode_cursor(float(flat[-4])) if more and flat else None
    return FeedPage(diffs, cursor, more)


def _was_cut(raw: Sequence[Any]) -> bool:
    """True when a feed page script stopped at the byte budget."""
    return raw[3] in (1, b"1", "1")


@dataclass(frozen=True)
class _Listed:
    """An entry of a feed page: a log entry with its body, or a feed pointer (its diff
    id, the body to fetch from the object's set)."""

    score: float
    pk_text: str
    #: The body (a log entry's), or None for a pointer.
    member: str | bytes | None
    #: The pointer's diff id; "" for a log entry.
    diff_id: str


def _fetch(
    model: Any,
    keys: ModelKeys,
    listed: list[_Listed],
    max_bytes: int,
) -> Steps[tuple[list[Diff], int]]:
    """The diffs ``listed`` names, up to about ``max_bytes``; and how many were taken.

    One script call: the bodies of the pointers, and every object's birth (a diff
    scored before its object's birth is marked ``superseded``).
    """
    if not listed:
        return [], 0
    label = model._meta.label_lower
    # One script key per object (its set, and its birth key after all the sets), by pk.
    sets: dict[str, int] = {}
    args: list[Any] = [max_bytes]
    for entry in listed:
        index = sets.setdefault(entry.pk_text, len(sets) + 1)
        size = "" if entry.member is None else len(entry.member)
        args += (index, repr(entry.score), entry.diff_id, size)
    script_keys = [keys.key_base + pk_text for pk_text in sets]
    script_keys += [keys.birth_base + pk_text for pk_text in sets]
    raw = yield ScriptCall(_FETCH_SCRIPT, script_keys, args)
    taken = int(raw[0])
    births = {pk_text: _score_or_none(raw[index]) for pk_text, index in sets.items()}
    fetched = raw[1 + len(sets) :]
    diffs: list[Diff] = []
    for entry, found in zip(listed[:taken], fetched, strict=True):
        member = found if entry.member is None else entry.member
        if not member:
            continue  # pruned (or its key deleted) since the page was read
        key = keys.key_base + entry.pk_text
        pk = pk_value(model, entry.pk_text)
        decoded = decode_entries(key, [(member, entry.score)], label, pk, eager=True)
        birth = births[entry.pk_text]
        for diff in decoded:
            if birth is not None and entry.score < birth:
                diff.__dict__["superseded"] = True
            diffs.append(diff)
    return diffs, taken


def _score_or_none(value: Any) -> float | None:
    """A birth key's score (``"<score>"`` or ``"<score>|<id>"``), or None."""
    if value in (b"", "", None):
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return float(text.partition("|")[0])


def _listed(feed: str, flat: list[Any]) -> list[_Listed]:
    """The entries of a feed page script's reply (four values each), skipping pointers
    that django-diffs did not write."""
    listed = []
    for i in range(0, len(flat) - 3, 4):
        score, pk_raw, member, id_raw = flat[i : i + 4]
        try:
            pk_text, diff_id = _text(pk_raw), _text(id_raw)
        except UnicodeDecodeError:
            pk_text, diff_id = "", "?"
        if not diff_id:
            listed.append(_Listed(float(score), pk_text, member, ""))
            continue
        if len(diff_id) < DIFF_ID_LENGTH or not pk_text or not _is_hex(diff_id):
            logger.warning(
                "Skipped an entry of %s that django-diffs did not write: %.80r",
                feed,
                id_raw + pk_raw if isinstance(id_raw, bytes) else f"{id_raw}{pk_raw}",
            )
            continue
        listed.append(_Listed(float(score), pk_text, None, diff_id))
    return listed


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdef" for char in text)
