"""``DiffSortedSet``: a thin, typed wrapper over one object's Redis sorted set.

Every read returns ``Diff`` objects whose ``timestamp`` is the stored score. This is
the raw view: it shows whatever the set holds, including diffs older than
``max_element_age`` that ``prune_diffs`` has not removed yet (the manager's reads
leave those out). A member
that is not ours (not JSON, or missing keys) is skipped with a warning on the
``diffs`` logger instead of failing the read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload

import redis
from django.apps import apps

from diffs import reads
from diffs.connection import cached_script
from diffs.diff import Diff, decode_members
from diffs.keys import pk_value
from diffs.lanes import LANES_LUA
from diffs.layout import current_layout

logger = logging.getLogger("diffs")

Score = float | str


def decode_entries(
    key: str,
    entries: Iterable[Any],
    model: str | None = None,
    pk: Any = None,
    *,
    eager: bool = False,
) -> list[Diff]:
    """Turn ``(member, score)`` pairs into diffs, skipping members that are not ours.

    ``model`` and ``pk`` name the key's own object (see ``Diff.from_member``). By
    default each diff decodes its member when first used (``Diff.decoded_on_use``);
    with ``eager`` every member is decoded now, and one that is not strict JSON is
    skipped with a warning too (pages, which must never break on one bad diff).
    """
    return decode_members(key, entries, model, pk, eager=eager)


# Shared by the raw reads: the object's keys, its birth, and its visible diffs in each
# lane (both lanes merged by score, see diffs.lanes). KEYS: the set, its birth key, its
# index, the model's log.
_VISIBLE_LUA = (
    LANES_LUA
    + """
local set, bkey, ix, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local pk_text = ARGV[#ARGV] -- the object's pk text, last: no log entry of another is taken
local birth = redis.call('GET', bkey)
birth = birth and tonumber(string.match(birth, '^[^|]+'))
-- The set lane: its first `hidden` ranks are an earlier row's (scored before the birth).
local hidden = 0
if birth then hidden = redis.call('ZCOUNT', set, '-inf', '(' .. fmt(birth)) end
local set_count = redis.call('ZCARD', set) - hidden
-- The log lane: records from `first` on (0-based) are this row's.
local first = 0
if birth then first = first_after(ix, birth, false) end
local index_count = record_count(ix) - first
-- Appends (member, score) of records k..last (0-based, in that order, either way);
-- a record whose log entry was pruned meanwhile is left out. One GETRANGE, and the
-- bodies by runs (diffs.lanes).
local function add_records(out, k, last)
  local low, high = math.min(k, last), math.max(k, last)
  local block = redis.call('GETRANGE', ix, 16 * low, 16 * (high + 1) - 1)
  local score_at, body, count = block_reader(log, block, pk_text)
  local first, stop, direction = 1, count, 1
  if k > last then first, stop, direction = count, 1, -1 end
  for r = first, stop, direction do
    local member = body(r)
    if member then
      out[#out + 1] = member
      out[#out + 1] = fmt(score_at(r))
    end
  end
  return out
end
-- Merges two flat (member, score) lists in score order (descending when `rev`), then
-- keeps `count` entries after skipping `offset` (count nil: all).
local function merged(a, b, rev, offset, count)
  local out, i, j, seen = {}, 1, 1, 0
  while a[i] or b[j] do
    local take_a = a[i] and (not b[j] or
      (rev and tonumber(a[i + 1]) > tonumber(b[j + 1])) or
      (not rev and tonumber(a[i + 1]) < tonumber(b[j + 1])))
    local member, score
    if take_a then member, score, i = a[i], a[i + 1], i + 2
    else member, score, j = b[j], b[j + 1], j + 2 end
    seen = seen + 1
    if seen > offset then
      if count and #out >= 2 * count then break end
      out[#out + 1] = member
      out[#out + 1] = score
    end
  end
  return out
end
"""
)

# A raw rank read of an object's diffs, leaving out those of an earlier row (scored
# before the object's birth, see diffs.keys). KEYS: as _VISIBLE_LUA. ARGV[1]: "range",
# "revrange" or "card"; ARGV[2], ARGV[3]: start and stop ranks (Python-style negative
# ranks count from the end of what is visible); ARGV[4]: the object's pk text.
_RANK_SCRIPT = (
    _VISIBLE_LUA
    + """
local total = set_count + index_count
if ARGV[1] == 'card' then return total end
local start, stop = tonumber(ARGV[2]), tonumber(ARGV[3])
if start < 0 then start = total + start end
if stop < 0 then stop = total + stop end
if start < 0 then start = 0 end
if stop >= total then stop = total - 1 end
if start > stop then return {} end
local rev = ARGV[1] == 'revrange'
if index_count == 0 then
  if rev then return redis.call('ZREVRANGE', set, start, stop, 'WITHSCORES') end
  return redis.call('ZRANGE', set, start + hidden, stop + hidden, 'WITHSCORES')
end
if set_count == 0 then
  local last = first + index_count - 1
  if rev then return add_records({}, last - start, last - stop) end
  return add_records({}, first + start, first + stop)
end
-- Both lanes hold diffs (for a while after an upgrade): merge what comes up to `stop`.
local lanes_set, lanes_log
local set_stop = stop
if set_stop > set_count - 1 then set_stop = set_count - 1 end
if rev then
  lanes_set = redis.call('ZREVRANGE', set, 0, set_stop, 'WITHSCORES')
  local low = first + index_count - 1 - stop
  if low < first then low = first end
  lanes_log = add_records({}, first + index_count - 1, low)
else
  lanes_set = redis.call('ZRANGE', set, hidden, hidden + set_stop, 'WITHSCORES')
  local high = first + stop
  if high > first + index_count - 1 then high = first + index_count - 1 end
  lanes_log = add_records({}, first, high)
end
return merged(lanes_set, lanes_log, rev, start, stop - start + 1)
"""
)

# A raw score read, from the object's birth on at the earliest. KEYS: as _VISIBLE_LUA.
# ARGV: low, high (Redis range bounds), offset, count ("" for all), "rev" to read
# newest first, and the object's pk text.
_SCORE_SCRIPT = (
    _VISIBLE_LUA
    + """
local low, high = ARGV[1], ARGV[2]
local low_value = bound_of(low)
if birth and (low_value == nil or birth > low_value) then low = fmt(birth) end
local rev = ARGV[5] == 'rev'
local offset, count = tonumber(ARGV[3]) or 0, tonumber(ARGV[4])
local command = {'ZRANGEBYSCORE', set, low, high, 'WITHSCORES'}
if rev then command = {'ZREVRANGEBYSCORE', set, high, low, 'WITHSCORES'} end
if count then
  command[#command + 1] = 'LIMIT'
  command[#command + 1] = 0
  command[#command + 1] = offset + count
end
local from_set = redis.call(unpack(command))
-- Records in [low, high]: from the first after the low bound to the last up to high.
local lo_value, lo_exclusive = bound_of(low)
local hi_value, hi_exclusive = bound_of(high)
if lo_value == nil or hi_value == nil then return from_set end -- Redis refused it above
local a = first_after(ix, lo_value, lo_exclusive)
local b = first_after(ix, hi_value, not hi_exclusive) - 1
if count and b - a + 1 > offset + count then
  if rev then a = b - offset - count + 1 else b = a + offset + count - 1 end
end
local from_log = {}
if a <= b then
  if rev then from_log = add_records({}, b, a) else from_log = add_records({}, a, b) end
end
return merged(from_set, from_log, rev, offset, count)
"""
)

# A raw member's score, in either lane: the set's, or (its id found in the index) the
# log's, when that entry's body is the member itself. KEYS: as _VISIBLE_LUA. ARGV[1]:
# the member.
_MEMBER_SCORE_SCRIPT = (
    LANES_LUA
    + """
local found = redis.call('ZSCORE', KEYS[1], ARGV[1])
if found then return found end
local id = string.match(ARGV[1], '"id":"(%x+)"')
if not id or #id ~= 16 then return nil end
local index = redis.call('GET', KEYS[3])
local at = index and find_record(index, id)
if not at then return nil end
local score = unpack_score(index, at)
if log_member(KEYS[4], score, '') == ARGV[1] then return fmt(score) end
return nil
"""
)


def pairs(flat: list[Any]) -> list[tuple[Any, float]]:
    """``(member, score)`` pairs from a flat ``WITHSCORES`` reply."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


class DiffSortedSet:
    """The diffs of one object, oldest first. Indexing and slicing follow Python rules.

    This is the raw view: it shows what the set holds, including diffs older than
    ``max_element_age`` that ``prune_diffs`` has not removed yet (the manager's reads
    leave those out), but never the diffs of an earlier row with the same pk (see
    ``diffs.keys.KeyLayout.birth_key``). Reads are bounded by the ranks or scores asked for;
    iterating reads ``ITERATION_STEP`` diffs per round trip.
    """

    #: Diffs per round trip while iterating.
    ITERATION_STEP = 100

    def __init__(
        self,
        key: str,
        client: redis.Redis,
        model: str | None = None,
        pk: Any = None,
        birth_key: str | None = None,
    ) -> None:
        self.key = key
        self.client = client
        layout = current_layout()
        shape = layout.parse(key)
        if shape is not None and shape.kind != "object":
            shape = None  # one of ours, but not an object's
        if model is None and pk is None and shape is not None:
            model, pk = _object_of(shape.label, shape.pk_text)
        #: label and pk of the object the set belongs to, given to the diffs read (a
        #: compact member is rebuilt from them).
        self.model = model
        self.pk = pk
        #: Where the score of the object's latest birth is kept (see diffs.keys), and
        #: the object's index and its model's log (diffs.lanes). A key that is not
        #: under our prefix gets companions named after it.
        if key.startswith(layout.prefix):
            index_key, log_key = layout.lane_keys_for(key)
            default_birth = layout.birth_key_for(key)
        else:
            index_key, log_key, default_birth = f"{key}:ix", f"{key}:log", f"{key}:born"
        self.birth_key = birth_key or default_birth
        self.index_key, self.log_key = index_key, log_key
        #: The pk text of the object's keys ("" when the key is not one of ours: its
        #: log entries are then taken without checking whose they are).
        self.pk_text = "" if shape is None else shape.pk_text
        #: The keys every raw read's script takes.
        self._script_keys = [key, self.birth_key, index_key, log_key]

    def __repr__(self) -> str:
        return f"<DiffSortedSet {self.key}>"

    def __iter__(self) -> Iterator[Diff]:
        return self._walk(self.zrange)

    def __reversed__(self) -> Iterator[Diff]:
        return self._walk(self.zrevrange)

    def _walk(self, read: Any) -> Iterator[Diff]:
        start = 0
        while True:
            window = read(start, start + self.ITERATION_STEP - 1)
            yield from window
            if len(window) < self.ITERATION_STEP:
                return
            start += self.ITERATION_STEP

    def __len__(self) -> int:
        return int(self._ranks("card", 0, 0))

    @overload
    def __getitem__(self, index: int) -> Diff: ...

    @overload
    def __getitem__(self, index: slice) -> list[Diff]: ...

    def __getitem__(self, index: int | slice) -> Diff | list[Diff]:
        if isinstance(index, slice):
            return self._slice(index)
        found = self.zrange(index, index)
        if not found:
            msg = f"{self.key} has no diff at index {index}"
            raise IndexError(msg)
        return found[0]

    def _slice(self, index: slice) -> list[Diff]:
        wanted = range(*index.indices(len(self)))
        if not wanted:
            return []
        low, high = min(wanted), max(wanted)
        window = self.zrange(low, high)
        return [window[i - low] for i in wanted if i - low < len(window)]

    @property
    def min_score(self) -> float | None:
        """The score (epoch ms) of the oldest diff, or None when there is none."""
        return self._edge_score(self._ranks("range", 0, 0))

    @property
    def max_score(self) -> float | None:
        """The score (epoch ms) of the newest diff, or None when there is none."""
        return self._edge_score(self._ranks("range", -1, -1))

    @staticmethod
    def _edge_score(flat: Any) -> float | None:
        return float(flat[1]) if flat else None

    def zrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, oldest first; ``stop`` is inclusive, as in Redis."""
        return self._decode(pairs(self._ranks("range", start, stop)))

    def zrevrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, newest first; ``stop`` is inclusive, as in Redis."""
        return self._decode(pairs(self._ranks("revrange", start, stop)))

    def zrangebyscore(
        self, min: Score, max: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``min <= score <= max``, oldest first (``"(x"``/``"-inf"`` work)."""
        return self._decode(pairs(self._by_score(min, max, start, num, "")))

    def zrevrangebyscore(
        self, max: Score, min: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``max >= score >= min``, newest first."""
        return self._decode(pairs(self._by_score(min, max, start, num, "rev")))

    def zadd(self, members: Mapping[str, float] | str, score: float | None = None) -> int:
        """Add raw ``{member: score}`` pairs, or one ``member`` with its ``score`` (0.1.16's
        form: ``zadd(*diff.typecast_for_storage())``); returns how many were new."""
        if isinstance(members, str):
            if score is None:
                msg = "zadd(member, score): give the score of a single member"
                raise TypeError(msg)
            members = {members: score}
        added = self.client.zadd(self.key, dict(members))
        return int(added or 0)

    def zscore(self, member: str) -> float | None:
        """The score of a raw member (in either lane, see ``diffs.lanes``), or None."""
        script = cached_script(self.client, _MEMBER_SCORE_SCRIPT)
        score = script(keys=self._script_keys, args=[member])
        return None if score is None else float(score)

    def _decode(self, entries: list[tuple[Any, float]]) -> list[Diff]:
        return decode_entries(self.key, entries, self.model, self.pk)

    def _ranks(self, op: str, start: int, stop: int) -> Any:
        script = cached_script(self.client, _RANK_SCRIPT)
        args = [op, start, stop, self.pk_text]
        return reads.read(lambda: script(keys=self._script_keys, args=args), self.key)

    def _by_score(
        self, low: Score, high: Score, start: int | None, num: int | None, direction: str
    ) -> Any:
        script = cached_script(self.client, _SCORE_SCRIPT)
        args: list[str | int] = [str(low), str(high), start or 0, "" if num is None else num]
        args += (direction, self.pk_text)
        return reads.read(lambda: script(keys=self._script_keys, args=args), self.key)


def _object_of(label: str, pk_text: str) -> tuple[str | None, Any]:
    """The label and pk (its field's Python value) of an object of an installed model,
    from its key's parts; ``(None, None)`` for a label no installed model has."""
    try:
        model = apps.get_model(label)
    except LookupError:
        return None, None
    return label, pk_value(model, pk_text)
